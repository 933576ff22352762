//! DICOM instances sent as a study (DICOMweb STOW-RS): the instances that decode, and that the model
//! has not received before, become one estimate; the others are listed with their PS3.18 failure reason.

use super::estimates::{self, Estimable, NewBatch};
use super::models::expand_options;
use super::{blocking, replay, AppError, Context, Keyed};
use crate::digest::sha256_hex;
use crate::ingest::expand::{self, dicom_name_of, DicomImages, NamedImage};
use crate::ingest::multipart::RelatedPart;
use crate::ingest::{dicom, IngestError};
use crate::store::idempotency::ScopedKey;
use crate::store::received;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use uuid::Uuid;

/// STOW-RS failure reasons (PS3.18 table "Store Instances Response Failure Reason").
pub mod reason {
    pub const PROCESSING_FAILURE: u16 = 0x0110;
    pub const DUPLICATE: u16 = 0x0111;
    pub const OUT_OF_RESOURCES: u16 = 0xA700;
    pub const CANNOT_UNDERSTAND: u16 = 0xC000;
    pub const TRANSFER_SYNTAX_NOT_SUPPORTED: u16 = 0xC122;
}

pub struct Failed {
    pub sop_class_uid: Option<String>,
    pub sop_instance_uid: Option<String>,
    pub code: u16,
    pub reason: String,
}

pub struct Accepted {
    pub part: usize,
    pub sop_class_uid: Option<String>,
    pub sop_instance_uid: Option<String>,
    pub images: Vec<NamedImage>,
}

/// What became of each part, in body order.
#[derive(Default)]
pub struct Outcome {
    pub accepted: Vec<Accepted>,
    pub failed: Vec<Failed>,
}

impl Outcome {
    /// The accepted instances' images, moved out (the response needs only the instances' UIDs).
    fn take_images(&mut self) -> Vec<NamedImage> {
        self.accepted
            .iter_mut()
            .flat_map(|a| std::mem::take(&mut a.images))
            .collect()
    }

    fn instance_uids(&self) -> Vec<String> {
        self.accepted
            .iter()
            .filter_map(|a| a.sop_instance_uid.clone())
            .collect()
    }

    /// Moves instances the model received before to the failures (PS3.18's duplicate reason).
    fn drop_received(&mut self, received: &std::collections::HashMap<String, uuid::Uuid>) {
        let (again, new): (Vec<_>, Vec<_>) = std::mem::take(&mut self.accepted)
            .into_iter()
            .partition(|a| {
                a.sop_instance_uid
                    .as_ref()
                    .is_some_and(|uid| received.contains_key(uid))
            });
        self.accepted = new;
        for a in again {
            let estimate = a
                .sop_instance_uid
                .as_ref()
                .and_then(|uid| received.get(uid))
                .map(|id| format!(" (estimate /v1/estimates/{id})"))
                .unwrap_or_default();
            self.failed.push(Failed {
                sop_class_uid: a.sop_class_uid,
                sop_instance_uid: a.sop_instance_uid,
                code: reason::DUPLICATE,
                reason: format!(
                    "part {}: this instance was already received for this model{estimate}",
                    a.part
                ),
            });
        }
    }
}

fn failure_code(e: &IngestError) -> u16 {
    match e {
        IngestError::UnsupportedTransferSyntax { .. } => reason::TRANSFER_SYNTAX_NOT_SUPPORTED,
        IngestError::TooLarge(_) => reason::OUT_OF_RESOURCES,
        IngestError::Malformed(_) => reason::CANNOT_UNDERSTAND,
        IngestError::Unsupported(_) => reason::PROCESSING_FAILURE,
    }
}

/// Decodes every part. CPU-bound: call from `spawn_blocking`.
fn decode_parts(parts: &[RelatedPart], opts: &expand::Options) -> Outcome {
    let mut out = Outcome::default();
    let mut seen_digests = HashSet::new();
    let mut seen_uids = HashSet::new();
    for (i, part) in parts.iter().enumerate() {
        let n = i + 1;
        let fail = |class, uid, code, reason: String| Failed {
            sop_class_uid: class,
            sop_instance_uid: uid,
            code,
            reason,
        };
        let ct = part.content_type.as_deref().unwrap_or("none");
        if ct != "application/dicom" {
            out.failed.push(fail(
                None,
                None,
                reason::CANNOT_UNDERSTAND,
                format!("part {n} has Content-Type {ct}; each part must be application/dicom"),
            ));
            continue;
        }
        let sha = sha256_hex(&part.data);
        if !seen_digests.insert(sha.clone()) {
            out.failed.push(fail(
                None,
                None,
                reason::DUPLICATE,
                format!("part {n} repeats an earlier part"),
            ));
            continue;
        }
        match expand::dicom_images(&dicom_name_of(&sha), &part.data, &sha, opts) {
            Err(dicom::Failure {
                sop_class_uid,
                sop_instance_uid,
                error,
            }) => out.failed.push(fail(
                sop_class_uid,
                sop_instance_uid,
                failure_code(&error),
                format!("part {n}: {error}"),
            )),
            Ok(DicomImages {
                sop_class_uid,
                sop_instance_uid,
                images,
            }) => {
                if let Some(uid) = &sop_instance_uid {
                    if !seen_uids.insert(uid.clone()) {
                        out.failed.push(fail(
                            sop_class_uid,
                            sop_instance_uid,
                            reason::DUPLICATE,
                            format!("part {n}: an earlier part has the same SOP Instance UID"),
                        ));
                        continue;
                    }
                }
                out.accepted.push(Accepted {
                    part: n,
                    sop_class_uid,
                    sop_instance_uid,
                    images,
                });
            }
        }
    }
    out
}

/// When nothing was stored, naming each part's problem. Parts are named by position, not SOP Instance
/// UID: UIDs can be traced back to a patient.
fn nothing_stored(out: &Outcome) -> AppError {
    let reasons: Vec<String> = out.failed.iter().map(|f| f.reason.clone()).collect();
    AppError::NothingStored(format!("no instance was stored: {}", reasons.join("; ")))
}

/// A digest of the instances sent (not of the framing), for Idempotency-Key replays.
fn parts_digest(parts: &[RelatedPart]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(sha256_hex(&p.data));
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// Decodes the instances sent and queues one estimate of those that are new to the model, recording the
/// answer `respond` builds so that a replay under the same Idempotency-Key gets it verbatim. Returns the
/// estimate and that answer (None for an estimate recorded without one).
pub async fn store(
    ctx: &Context,
    target: &Estimable,
    key: Option<&ScopedKey>,
    parts: Vec<RelatedPart>,
    respond: impl Fn(Uuid, &Outcome) -> Value,
) -> Result<(Uuid, Option<Value>), AppError> {
    let (parts, digest) = blocking(move || {
        let digest = parts_digest(&parts);
        (parts, digest)
    })
    .await?;
    let keyed = key.map(|key| Keyed {
        key,
        digest: &digest,
    });
    if let Some(first) = replay(ctx, keyed).await? {
        return Ok((first.resource_id, first.response));
    }
    let opts = expand_options(ctx, None, 0);
    let mut out = blocking(move || decode_parts(&parts, &opts)).await?;
    let known = received::known(&ctx.pool, target.model.id, &out.instance_uids()).await?;
    out.drop_received(&known);
    if out.accepted.is_empty() {
        return Err(nothing_stored(&out));
    }
    let images = out.take_images();
    expand::check_total(&images, "the request", &expand_options(ctx, None, 0))?;
    let instances = out.instance_uids();
    let batch = NewBatch {
        target,
        set: &images,
        dicom_instances: &instances,
    };
    estimates::create(ctx, keyed, batch, |id| Some(respond(id, &out))).await
}
