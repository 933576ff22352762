//! The dashboard over plain HTTP: pages need a session, the sign-in form takes any role's API key and
//! sets a locked-down cookie, sign-out and key revocation end the session.

use crate::common::*;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_pages_need_a_session_that_any_key_opens() {
    let app = TestApp::start().await;
    let id = reference_model_id(&app, "paged").await;
    let client = no_redirects();
    for page in ["/ui".to_string(), format!("/ui/models/{id}")] {
        let r = client.get(app.at(&page)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{page}");
        assert_eq!(r.headers()[LOCATION], "/ui/login");
    }
    let form = client.get(app.at("/ui/login")).send().await.unwrap();
    assert_eq!(form.status(), StatusCode::OK);
    assert!(form.text().await.unwrap().contains("name=\"key\""));

    let wrong = client
        .post(app.at("/ui/login"))
        .form(&[("key", "spe_0000.wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.headers().get(SET_COOKIE).is_none());

    let signed_in = client
        .post(app.at("/ui/login"))
        .form(&[("key", app.reader.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    let set = signed_in.headers()[SET_COOKIE]
        .to_str()
        .unwrap()
        .to_string();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(set.contains(attribute), "{set}");
    }
    let cookie = set.split(';').next().unwrap().to_string();
    let page = client
        .get(app.at(&format!("/ui/models/{id}")))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("<h1>paged</h1>"));
    let missing = client
        .get(app.at(&format!("/ui/models/{}", uuid::Uuid::new_v4())))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert!(missing.text().await.unwrap().contains("does not exist"));

    let out = client
        .post(app.at("/ui/logout"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    let after = client
        .get(app.at("/ui"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), StatusCode::SEE_OTHER, "the session is gone");
    app.stop().await;
}
