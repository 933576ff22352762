//! Load test on loopback (`make bench-load`; `ARGS="--seconds 30"`): the real `spe serve` binary, a private
//! PostgreSQL, and at once, for the given time:
//! - 32 clients posting large batches back to back (24 noise images of 512x512 each, ~6 MB);
//! - 200 GET/s polling an estimate (open loop: one request every 5 ms, however slow the answers);
//! - 50 slow clients sending one header byte per second.
//!
//! It reports status codes (no 5xx allowed; uploads beyond the limits get 429), GET latency (p99 target
//! below 50 ms), the server's peak resident memory, how soon slow clients are cut, and whether any job ran
//! twice. Figures go to stdout and target/load.json; the exit status is 1 when a target is missed.

use image::{GrayImage, Luma};
use rand::{Rng, SeedableRng};
use reqwest::multipart::{Form, Part};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const UPLOADERS: usize = 32;
const IMAGES_PER_UPLOAD: usize = 24;
const GET_EVERY: Duration = Duration::from_millis(5);
const SLOW_CLIENTS: usize = 50;
const SPEC: &str = r#"{"input":{"name":"image","channels":1,"scale":"unit"},"output":{"name":"logits","kind":"argmax","foreground_class":1}}"#;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One GET of the finished estimate, its latency (ms) or its failure counted.
#[derive(Clone)]
struct Poll {
    client: reqwest::Client,
    resource: String,
    key: String,
    latencies: Arc<Mutex<Vec<f64>>>,
    errors: Arc<Mutex<usize>>,
}

impl Poll {
    async fn get(self) {
        let t = Instant::now();
        match self
            .client
            .get(&self.resource)
            .bearer_auth(&self.key)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => {
                let _ = r.bytes().await;
                self.latencies
                    .lock()
                    .unwrap()
                    .push(t.elapsed().as_secs_f64() * 1000.0);
            }
            _ => *self.errors.lock().unwrap() += 1,
        }
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Sends the request and reads its JSON body.
async fn json_of(request: reqwest::RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}

fn synthetic() -> PathBuf {
    repo().join("tests/fixtures/synthetic")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(dir).unwrap();
    let mut v: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

fn part(path: &Path) -> Part {
    Part::bytes(std::fs::read(path).unwrap())
        .file_name(path.file_name().unwrap().to_string_lossy().to_string())
}

fn noise_png(seed: u64) -> Vec<u8> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let img = GrayImage::from_fn(512, 512, |_, _| Luma([rng.random::<u8>()]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[i - 1]
}

fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

#[derive(Default)]
struct Codes {
    accepted: usize,
    queue_full: usize,
    too_many_uploads: usize,
    server_errors: usize,
    other: Vec<u16>,
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seconds: u64 = args
        .iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let admin_url = std::env::var("DATABASE_URL")
        .expect("DATABASE_URL (make bench-load starts a private PostgreSQL)");
    // A fresh database per run on that cluster.
    let admin = sqlx::PgPool::connect(&admin_url).await.unwrap();
    let db = format!("spe_load_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&admin)
        .await
        .unwrap();
    let database_url = match admin_url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{db}"),
        None => panic!("DATABASE_URL has no database name"),
    };
    let blobs = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let server = Server(
        Command::new(env!("CARGO_BIN_EXE_spe"))
            .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
            .arg("--blob-store")
            .arg(blobs.path())
            .args(["--drain-secs", "0"])
            .env("DATABASE_URL", &database_url)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot start target/release/spe"),
    );
    let pid = server.0.id();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();
    let started = Instant::now();
    while client.get(format!("{url}/readyz")).send().await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the server did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pool = sqlx::PgPool::connect(&database_url).await.unwrap();
    let (_, key) = spe::store::keys::create(&pool, spe::store::keys::Role::Admin, "load")
        .await
        .unwrap();

    // A model, its reference set and a pair calibration (instant), then one finished estimate to poll.
    let form = Form::new()
        .text("name", "load")
        .text("spec", SPEC)
        .part("onnx", part(&synthetic().join("checkpoints/ckpt_07.onnx")));
    let model = json_of(
        client
            .post(format!("{url}/v1/models"))
            .bearer_auth(&key)
            .multipart(form),
    )
    .await;
    let model = model["id"].as_str().unwrap().to_string();
    let mut form = Form::new();
    for f in files(&synthetic().join("reference/images")) {
        form = form.part("image", part(&f));
    }
    for f in files(&synthetic().join("reference/labels")) {
        form = form.part("label", part(&f));
    }
    let r = client
        .put(format!("{url}/v1/models/{model}/reference-set"))
        .bearer_auth(&key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let m = |d: f64| json!({"dice": d, "jaccard": d * 0.9, "precision": d, "recall": d, "hd95": 30.0 * (1.0 - d), "pearson": d});
    let points: Vec<Value> = (0..4)
        .map(|i| {
            let d = 0.5 + 0.1 * i as f64;
            json!({"name": format!("p{i}"), "pseudo": m(d - 0.1), "real": m(d)})
        })
        .collect();
    let r = client
        .post(format!("{url}/v1/models/{model}/calibrations"))
        .bearer_auth(&key)
        .json(&json!({"points": points, "params": {"support_size": 8, "repetitions": 2}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let images: Arc<Vec<Vec<u8>>> =
        Arc::new((0..IMAGES_PER_UPLOAD as u64).map(noise_png).collect());
    let upload_mb = images.iter().map(Vec::len).sum::<usize>() as f64 / 1e6;
    let batch = |images: &[Vec<u8>]| {
        images.iter().enumerate().fold(Form::new(), |f, (i, px)| {
            f.part(
                "image",
                Part::bytes(px.clone()).file_name(format!("n{i:03}.png")),
            )
        })
    };
    let r = client
        .post(format!("{url}/v1/models/{model}/estimates"))
        .bearer_auth(&key)
        .multipart(batch(&images))
        .send()
        .await
        .unwrap();
    let location = r.headers()["location"].to_str().unwrap().to_string();
    loop {
        let v = json_of(client.get(format!("{url}{location}")).bearer_auth(&key)).await;
        if v["status"] == "succeeded" || v["status"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    println!(
        "load for {seconds} s: {UPLOADERS} uploaders ({IMAGES_PER_UPLOAD} images, {upload_mb:.1} MB each), \
         GET every {} ms, {SLOW_CLIENTS} slow clients",
        GET_EVERY.as_millis()
    );
    let until = Instant::now() + Duration::from_secs(seconds);
    let codes = Arc::new(Mutex::new(Codes::default()));
    let mut tasks = Vec::new();
    for _ in 0..UPLOADERS {
        let (client, url, key, model, codes, images) = (
            client.clone(),
            url.clone(),
            key.clone(),
            model.clone(),
            codes.clone(),
            images.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                let r = client
                    .post(format!("{url}/v1/models/{model}/estimates"))
                    .bearer_auth(&key)
                    .multipart(batch(&images))
                    .send()
                    .await;
                let status = r.as_ref().map(|r| r.status().as_u16()).unwrap_or(0);
                let body: Value = match r {
                    Ok(r) => r.json().await.unwrap_or(Value::Null),
                    Err(_) => Value::Null,
                };
                {
                    let mut c = codes.lock().unwrap();
                    match status {
                        202 => c.accepted += 1,
                        429 if body["type"] == "urn:spe:problem:too-many-uploads" => {
                            c.too_many_uploads += 1
                        }
                        429 => c.queue_full += 1,
                        500..=599 => c.server_errors += 1,
                        s => c.other.push(s),
                    }
                }
                if status == 429 {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }));
    }
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let get_errors = Arc::new(Mutex::new(0usize));
    let poll = Poll {
        client: client.clone(),
        resource: format!("{url}{location}"),
        key: key.clone(),
        latencies: latencies.clone(),
        errors: get_errors.clone(),
    };
    let poller = tokio::spawn(async move {
        let mut tick = tokio::time::interval(GET_EVERY);
        let mut inflight = Vec::new();
        while Instant::now() < until {
            tick.tick().await;
            inflight.push(tokio::spawn(poll.clone().get()));
        }
        for t in inflight {
            let _ = t.await;
        }
    });
    let slow: Vec<_> = (0..SLOW_CLIENTS)
        .map(|_| {
            let addr = format!("127.0.0.1:{port}");
            tokio::spawn(async move {
                let t = Instant::now();
                let Ok(mut conn) = tokio::net::TcpStream::connect(&addr).await else {
                    return None;
                };
                let request = b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
                for byte in request.iter().cycle().take(120) {
                    if conn.write_all(&[*byte]).await.is_err() {
                        return Some(t.elapsed().as_secs_f64());
                    }
                    let mut buf = [0u8; 256];
                    match tokio::time::timeout(Duration::from_secs(1), conn.read(&mut buf)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => return Some(t.elapsed().as_secs_f64()),
                        _ => {}
                    }
                }
                None
            })
        })
        .collect();
    let peak_rss = Arc::new(Mutex::new(0f64));
    let sampler = {
        let peak_rss = peak_rss.clone();
        tokio::spawn(async move {
            while Instant::now() < until + Duration::from_secs(5) {
                if let Some(mb) = rss_mb(pid) {
                    let mut p = peak_rss.lock().unwrap();
                    *p = p.max(mb);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    for t in tasks {
        let _ = t.await;
    }
    let _ = poller.await;
    let mut cut_after = Vec::new();
    let mut never_cut = 0;
    for s in slow {
        match s.await.unwrap() {
            Some(secs) => cut_after.push(secs),
            None => never_cut += 1,
        }
    }
    let _ = sampler.await;

    // Let the queue drain, then look for jobs claimed more than once.
    let drained = Instant::now();
    loop {
        let open: i64 =
            sqlx::query_scalar("SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')")
                .fetch_one(&pool)
                .await
                .unwrap();
        if open == 0 || drained.elapsed() > Duration::from_secs(600) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (jobs, twice, failed): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE attempts > 1), count(*) FILTER (WHERE state = 'failed') FROM jobs",
    )
    .fetch_one(&pool)
    .await
    .unwrap();

    let mut lat = latencies.lock().unwrap().clone();
    lat.sort_by(f64::total_cmp);
    cut_after.sort_by(f64::total_cmp);
    let c = std::mem::take(&mut *codes.lock().unwrap());
    let p99 = percentile(&lat, 0.99);
    let rss = *peak_rss.lock().unwrap();
    let get_err = *get_errors.lock().unwrap();
    let slow_max = cut_after.last().copied().unwrap_or(f64::NAN);
    println!(
        "uploads: {} accepted, {} 429 queue full, {} 429 too many uploads, {} 5xx, other {:?}",
        c.accepted, c.queue_full, c.too_many_uploads, c.server_errors, c.other
    );
    println!(
        "GET: {} ok, {get_err} errors; p50 {:.1} ms, p99 {p99:.1} ms, max {:.1} ms",
        lat.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 1.0)
    );
    println!(
        "slow clients: {} cut, the last after {slow_max:.1} s; {never_cut} never cut",
        cut_after.len()
    );
    println!("server peak RSS: {rss:.0} MB");
    println!("jobs: {jobs}, run more than once {twice}, failed {failed}");
    let report = json!({
        "seconds": seconds, "uploaders": UPLOADERS, "upload_mb": upload_mb,
        "uploads": {"accepted": c.accepted, "queue_full": c.queue_full, "too_many_uploads": c.too_many_uploads,
                    "server_errors": c.server_errors, "other": c.other},
        "get": {"ok": lat.len(), "errors": get_err, "p50_ms": percentile(&lat, 0.5), "p99_ms": p99,
                "max_ms": percentile(&lat, 1.0)},
        "slow_clients": {"cut": cut_after.len(), "last_cut_s": slow_max, "never_cut": never_cut},
        "peak_rss_mb": rss,
        "jobs": {"total": jobs, "run_twice": twice, "failed": failed},
    });
    std::fs::create_dir_all(repo().join("target")).unwrap();
    std::fs::write(
        repo().join("target/load.json"),
        serde_json::to_string_pretty(&report).unwrap(),
    )
    .unwrap();
    let mut missed = Vec::new();
    if c.server_errors > 0 || get_err > 0 {
        missed.push("5xx or failed GETs");
    }
    if c.queue_full + c.too_many_uploads == 0 {
        missed.push("no upload was refused with 429");
    }
    if p99.is_nan() || p99 >= 50.0 {
        missed.push("GET p99 >= 50 ms");
    }
    if never_cut > 0 || slow_max > 35.0 {
        missed.push("slow clients not cut within 35 s");
    }
    if twice > 0 {
        missed.push("a job ran twice");
    }
    drop(server);
    pool.close().await;
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .execute(&admin)
        .await;
    if missed.is_empty() {
        println!("all targets met");
    } else {
        println!("targets missed: {}", missed.join("; "));
        std::process::exit(1);
    }
}
