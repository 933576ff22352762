use super::*;
use crate::engine::spe::{MetricEstimate, PseudoOutcome, SupportCount};
use crate::store::results::V1;

fn result(alerts: Vec<Alert>) -> EstimateResult {
    let metrics = BTreeMap::from([(
        Metric::Dice,
        MetricEstimate {
            estimate: 0.91,
            interval: [0.88, 0.94],
            pseudo: 0.87,
            agreement: None,
        },
    )]);
    let support = SupportCount {
        used: 12,
        rejected: 0,
    };
    EstimateResult {
        version: V1,
        estimate: Estimate::Ok {
            metrics,
            support,
            anchor: None,
            warnings: vec![Warning {
                code: "unanchored".into(),
                message: "m".into(),
            }],
        },
        pseudo: PseudoOutcome::InsufficientSupport { support },
        hd95_mm: None,
        alerts,
    }
}

fn alert(severity: Severity) -> Alert {
    Alert {
        metric: Metric::Dice,
        rule: "min".into(),
        threshold: Some(0.95),
        estimate: Some(0.91),
        interval: Some([0.88, 0.94]),
        severity,
    }
}

#[test]
fn an_alert_raises_its_event_and_a_warning_alone_does_not() {
    use Event::*;
    assert_eq!(events_of(Ok(&result(vec![]))), [EstimateSucceeded]);
    assert_eq!(
        events_of(Ok(&result(vec![alert(Severity::Warning)]))),
        [EstimateSucceeded]
    );
    assert_eq!(
        events_of(Ok(&result(vec![
            alert(Severity::Warning),
            alert(Severity::Alert)
        ]))),
        [EstimateSucceeded, EstimateAlert]
    );
    assert_eq!(events_of(Err("no GPU")), [EstimateFailed]);
}

#[test]
fn the_payload_carries_the_numbers_alerts_and_failure() {
    let model = ModelRef {
        id: Uuid::nil(),
        name: "heart".into(),
    };
    let estimate = Uuid::new_v4();
    let now = Utc::now();
    let r = result(vec![alert(Severity::Alert)]);
    let ok = payload(
        Uuid::nil(),
        Event::EstimateAlert,
        model.clone(),
        estimate,
        Ok(&r),
        now,
    );
    let json = serde_json::to_value(&ok).unwrap();
    assert_eq!(json["event"], "estimate.alert");
    assert_eq!(json["model"]["name"], "heart");
    assert_eq!(json["estimate"]["url"], format!("/v1/estimates/{estimate}"));
    assert_eq!(json["estimate"]["metrics"]["dice"]["estimate"], 0.91);
    assert_eq!(json["estimate"]["alerts"][0]["severity"], "alert");
    assert_eq!(json["estimate"]["warnings"][0]["code"], "unanchored");
    let failed = payload(
        Uuid::nil(),
        Event::EstimateFailed,
        model,
        estimate,
        Err("bad ONNX"),
        now,
    );
    let json = serde_json::to_value(&failed).unwrap();
    assert_eq!(json["estimate"]["status"], "failed");
    assert_eq!(json["estimate"]["error"], "bad ONNX");
    assert_eq!(json["estimate"]["metrics"], serde_json::json!({}));
}

#[test]
fn a_signature_verifies_only_with_its_secret_and_body() {
    let body = r#"{"event":"estimate.alert"}"#;
    let header = signature("0123456789abcdef", 1_700_000_000, body);
    assert!(header.starts_with("t=1700000000,v1="), "{header}");
    assert_eq!(header.len(), "t=1700000000,v1=".len() + 64);
    assert!(verify("0123456789abcdef", &header, body));
    assert!(!verify("0123456789abcdeg", &header, body));
    assert!(!verify(
        "0123456789abcdef",
        &header,
        &body.replace("alert", "alerT")
    ));
    // The timestamp is signed too: a replay cannot be given a fresh one.
    let moved = header.replace("t=1700000000", "t=1700000001");
    assert!(!verify("0123456789abcdef", &moved, body));
    assert!(!verify("0123456789abcdef", "v1=00", body));
}

#[test]
fn the_signature_is_the_documented_hmac() {
    // RFC 4231 test case 2: HMAC-SHA256 of "what do ya want for nothing?" keyed "Jefe". Here the signed
    // text is "<t>.<body>", so t = "what do ya want for nothing" is not possible; check the construction
    // instead against an independent computation of the same primitive.
    let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
    mac.update(b"what do ya want for nothing?");
    assert_eq!(
        hex::encode(mac.finalize().into_bytes()),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
    mac.update(b"42.{}");
    assert_eq!(
        signature("Jefe", 42, "{}"),
        format!("t=42,v1={}", hex::encode(mac.finalize().into_bytes()))
    );
}

#[test]
fn urls_must_be_http_to_an_allowed_host() {
    let any = AllowList::parse("");
    assert!(any.check("https://hooks.example.org/x").is_ok());
    assert!(any.check("http://127.0.0.1:9000/x").is_ok());
    for bad in [
        "ftp://example.org/",
        "file:///etc/passwd",
        "not a url",
        "https://user:pw@example.org/",
    ] {
        assert!(any.check(bad).is_err(), "{bad}");
    }
    let list = AllowList::parse(" hooks.example.org, 127.0.0.1:9000 ,*.corp.local");
    assert!(list.check("https://hooks.example.org/a").is_ok());
    assert!(list.check("HTTPS://HOOKS.EXAMPLE.ORG/a").is_ok());
    assert!(list.check("http://127.0.0.1:9000/").is_ok());
    assert!(list.check("http://pacs.corp.local/").is_ok());
    let refused = list.check("http://127.0.0.1:9001/").unwrap_err();
    assert!(refused.contains("SPE_WEBHOOK_ALLOWED_HOSTS"), "{refused}");
    assert!(list.check("http://169.254.169.254/latest").is_err());
    assert!(list.check("http://corp.local.evil.org/").is_err());
    assert!(list.check("http://hooks.example.org.evil.org/").is_err());
}
