//! Integration tests of the REST service over real HTTP against real Postgres (`make test` starts one
//! and sets DATABASE_URL). Run one group with e.g. `cargo test --test service flow`.

mod activation;
mod api_clients;
mod bad_input;
mod browser;
mod clinical;
mod common;
mod dashboard;
mod flow;
mod idempotency;
mod jsrt;
mod lifecycle;
mod logs;
mod openapi;
mod plots;
mod roles;
mod s3;
#[path = "../common/mod.rs"]
mod shared_data;
mod stored;
mod supervise;
mod sweep;
mod thresholds;
mod webhooks;
mod windows;
mod worker_crash;
