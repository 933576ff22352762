"""README walkthrough steps 1-5 through a Python client generated from openapi/openapi.json.

The test `api_clients::generated_python_client_runs_the_walkthrough` (tests/service) generates the client
(`spe_client`, with openapi-python-client) onto PYTHONPATH and runs this against a test server:

    SPE_URL=http://127.0.0.1:PORT SPE_KEY=<admin key> python tools/api_client_walkthrough.py

Every answer is read through the client's typed models, as a user of the generated client would; an
unexpected answer fails the script with what came back.
"""

import os
import sys
import time
import uuid
from http import HTTPStatus
from pathlib import Path

from spe_client import AuthenticatedClient
from spe_client.api.calibrations import create_calibration, get_calibration, list_calibrations
from spe_client.api.estimates import get_estimate, list_estimates, submit_estimate
from spe_client.api.models import get_model, put_reference_set, register_model
from spe_client.models import (
    BatchForm,
    InputSpecChannels,
    CalibrationForm,
    CalibrationView,
    EstimateOutcome,
    EstimatePage,
    EstimateView,
    InputSpec,
    JobStatus,
    LabelledSetForm,
    Model,
    ModelSpec,
    OutputKind,
    OutputSpec,
    Params,
    Problem,
    ProblemType,
    ReferenceSet,
    RegisterModelForm,
    Scale,
)
from spe_client.types import File

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "synthetic"


def files(folder: Path) -> list[File]:
    return [File(payload=p.read_bytes(), file_name=p.name) for p in sorted(folder.iterdir()) if p.is_file()]


def expect(response, status: HTTPStatus, kind):
    """The parsed body of a response that must have this status and model type."""
    body = response.parsed
    assert response.status_code == status and isinstance(body, kind), (
        f"expected {status.value} {kind.__name__}, got {response.status_code}: {response.content[:500]!r}"
    )
    return body


def expect_problem(response, status: HTTPStatus, slug: str) -> Problem:
    """A problem response, parsed by the client into a Problem whose type is the ProblemType enum."""
    problem = expect(response, status, Problem)
    kind = ProblemType(f"urn:spe:problem:{slug}")
    assert problem.type_ is kind and problem.status == status.value and problem.detail, problem.to_dict()
    return problem


def poll(fetch, limit_s: float = 300):
    started = time.monotonic()
    while True:
        view = fetch()
        if view.status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
            return view
        assert time.monotonic() - started < limit_s, f"not finished after {limit_s} s: {view.to_dict()}"
        time.sleep(0.5)


def main() -> None:
    client = AuthenticatedClient(base_url=os.environ["SPE_URL"], token=os.environ["SPE_KEY"], timeout=120)

    # 1. Register the model: ONNX + spec.
    spec = ModelSpec(
        input_=InputSpec(name="image", channels=InputSpecChannels.VALUE_1, scale=Scale.UNIT),
        output=OutputSpec(name="logits", kind=OutputKind.ARGMAX, foreground_class=1),
    )
    name = f"client-{uuid.uuid4().hex[:8]}"
    onnx = File(payload=(FIXTURES / "checkpoints" / "ckpt_07.onnx").read_bytes(), file_name="ckpt_07.onnx")
    form = RegisterModelForm(name=name, spec=spec, onnx=onnx)
    model = expect(register_model.sync_detailed(client=client, body=form), HTTPStatus.CREATED, Model)
    assert model.name == name and model.spec.output.kind == OutputKind.ARGMAX, model
    # The same name again: a 409 the client reads as a Problem.
    onnx.payload = (FIXTURES / "checkpoints" / "ckpt_07.onnx").read_bytes()
    again = register_model.sync_detailed(client=client, body=RegisterModelForm(name=name, spec=spec, onnx=onnx))
    expect_problem(again, HTTPStatus.CONFLICT, "conflict")

    # 2. Attach its reference set.
    reference = LabelledSetForm(
        image=files(FIXTURES / "reference" / "images"), label=files(FIXTURES / "reference" / "labels")
    )
    ref = expect(put_reference_set.sync_detailed(model.id, client=client, body=reference), HTTPStatus.OK, ReferenceSet)
    assert ref.images == len(reference.image) > 0, ref

    # 3. Calibrate from the training checkpoints on the labelled calibration split (a background job).
    calibration = CalibrationForm(
        checkpoint=files(FIXTURES / "checkpoints"),
        image=files(FIXTURES / "calibration" / "images"),
        label=files(FIXTURES / "calibration" / "labels"),
        params=Params(support_size=8, repetitions=2, min_area=20, seed=1),
    )
    queued = expect(
        create_calibration.sync_detailed(model.id, client=client, body=calibration), HTTPStatus.ACCEPTED, CalibrationView
    )
    cal = poll(lambda: expect(get_calibration.sync_detailed(queued.id, client=client), HTTPStatus.OK, CalibrationView))
    assert cal.status == JobStatus.SUCCEEDED and cal.active, cal.to_dict()
    fit = cal.result.fits.dice
    print(f"calibration {cal.id}: dice {fit.mapping}, loo_mae {fit.loo_mae:.3f}, r {fit.pearson_r:.3f}")
    listed = list_calibrations.sync_detailed(model.id, client=client).parsed
    assert [c.id for c in listed.items] == [cal.id], listed
    assert expect(get_model.sync_detailed(model.id, client=client), HTTPStatus.OK, Model).active_calibration_id == cal.id

    # 4. Post an unlabeled batch (202 + Location) and poll it; the same Idempotency-Key returns the same job.
    key = f"walkthrough-{model.id}"
    submitted = submit_estimate.sync_detailed(
        model.id, client=client, body=BatchForm(image=files(FIXTURES / "batch")), idempotency_key=key
    )
    first = expect(submitted, HTTPStatus.ACCEPTED, EstimateView)
    assert submitted.headers["location"] == f"/v1/estimates/{first.id}", submitted.headers
    replayed = submit_estimate.sync_detailed(
        model.id, client=client, body=BatchForm(image=files(FIXTURES / "batch")), idempotency_key=key
    )
    assert expect(replayed, HTTPStatus.ACCEPTED, EstimateView).id == first.id
    est = poll(lambda: expect(get_estimate.sync_detailed(first.id, client=client), HTTPStatus.OK, EstimateView))
    assert est.status == JobStatus.SUCCEEDED and est.result.status == EstimateOutcome.OK, est.to_dict()
    dice = est.result.metrics.dice
    low, high = dice.interval
    assert 0.0 <= low <= dice.estimate <= high <= 1.0, dice.to_dict()
    assert est.result.metrics.hd95.estimate >= 0.0
    print(f"estimate {est.id}: dice {dice.estimate:.3f} [{low:.3f}, {high:.3f}], support {est.result.support.used}")

    # 5. What a dashboard polls: the model's estimates, newest first.
    page = expect(list_estimates.sync_detailed(model.id, client=client, limit=10), HTTPStatus.OK, EstimatePage)
    assert [e.id for e in page.items] == [est.id] and page.next_cursor is None, page.to_dict()
    # Errors are Problems: a limit outside 1-500, an estimate that does not exist.
    expect_problem(
        list_estimates.sync_detailed(model.id, client=client, limit=0), HTTPStatus.BAD_REQUEST, "bad-request"
    )
    expect_problem(
        get_estimate.sync_detailed(uuid.uuid4(), client=client), HTTPStatus.NOT_FOUND, "not-found"
    )
    print("walkthrough steps 1-5 passed through the generated client")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        sys.exit(f"walkthrough failed: {e}")
