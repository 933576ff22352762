//! The problem+json responses of the OpenAPI document, shared by the routes. Each type below adds the
//! statuses one kind of route can answer with a [`Problem`](super::error::Problem) body; a route lists
//! them in `responses(..)` after its own responses. A status the route describes itself (a 409 with its
//! reason) goes after them and replaces the shared one.

use std::collections::BTreeMap;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};

/// A problem response: the shared `Problem` schema, with Retry-After where the client should wait.
fn problem(description: &str, retry_after: bool) -> RefOr<Response> {
    let mut response = ResponseBuilder::new().description(description).content(
        "application/problem+json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("Problem")))
            .build(),
    );
    if retry_after {
        response = response.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(0)),
                )
                .description(Some("Seconds to wait before retrying"))
                .build(),
        );
    }
    response.build().into()
}

macro_rules! problem_responses {
    ($($(#[$doc:meta])* $name:ident { $($status:literal => $description:literal $(, $retry:ident)?;)+ })+) => {$(
        $(#[$doc])*
        pub struct $name;

        impl utoipa::IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                BTreeMap::from([$((
                    $status.to_string(),
                    problem($description, problem_responses!(@retry $($retry)?)),
                )),+])
            }
        }
    )+};
    (@retry retry_after) => { true };
    (@retry) => { false };
}

problem_responses! {
    /// Every route behind an API key (and the operations routes under --protect-ops).
    Unauthorized {
        401 => "No API key, or an unknown or revoked one";
    }
    /// Routes that need more than the reader role.
    Forbidden {
        403 => "The key's role does not allow this";
    }
    /// Routes naming a resource by id.
    NotFound {
        404 => "No such resource";
    }
    /// Every route that reads the database.
    Busy {
        503 => "The server is busy (no database connection came free in time) or a dependency is down; \
                retry after the Retry-After delay", retry_after;
    }
    /// Routes taking a JSON body.
    JsonBody {
        400 => "The body is not valid JSON";
        413 => "The body is larger than the server accepts";
        415 => "The body is not application/json";
        422 => "The JSON does not have the expected shape, or its content cannot be used";
    }
    /// Routes taking a request body (uploads).
    Uploads {
        400 => "Malformed request (headers, multipart framing)";
        408 => "The request took longer than the server allows (SPE_REQUEST_TIMEOUT_SECS)";
        413 => "The body, an image or a volume is larger than the server accepts";
        415 => "A media type the route does not take";
        422 => "The request is well-formed but its content cannot be used";
        429 => "Too many uploads at once, or the job queue is full; retry after the Retry-After delay", retry_after;
    }
}
