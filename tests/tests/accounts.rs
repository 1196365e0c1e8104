//! Operator accounts made and changed by an administrator in the console's API, on central's
//! binary: a new grid-station account reaches its station's cases only; nobody but an
//! administrator looks at or changes accounts; a disabled account's open session ends at its
//! next request; bad input is refused with the field named.

use gridedge_tests::services::{Console, TestCentral};
use gridedge_tests::{init_test_logging, workspace_root};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrator_makes_a_station_account_and_disables_it_and_no_one_else_can() {
    init_test_logging();
    let central = TestCentral::embedded_with("").await.unwrap();
    let (status, _) = central
        .post_masterdata(&workspace_root().join("deploy/sample-data"))
        .await
        .unwrap();
    assert_eq!(status, 201);
    let admin = central.console("admin").await.unwrap();
    let station = "11019900100002001";

    for (body, field) in [
        (
            json!({"name": "x y", "role": "operator", "password": "long enough 1"}),
            "name",
        ),
        (
            json!({"name": "li", "role": "operator", "password": "short"}),
            "password",
        ),
        (
            json!({"name": "li", "role": "operator", "scope": "nowhere", "password": "long enough 1"}),
            "scope",
        ),
        (
            json!({"name": "li", "role": "king", "password": "long enough 1"}),
            "role",
        ),
    ] {
        let (status, answer) = admin.post("/api/v1/operators", body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(
            answer["error"].as_str().unwrap_or_default().contains(field),
            "{answer}"
        );
    }
    let (status, made) = admin
        .post(
            "/api/v1/operators",
            json!({"name": "guangming-1", "role": "operator", "scope": station, "password": "光明路网格站 2026"}),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    assert_eq!(made["scope"], station);
    assert!(made.get("hash").is_none(), "never the hash: {made}");
    let (status, _) = admin
        .post(
            "/api/v1/operators",
            json!({"name": "guangming-1", "role": "operator", "password": "long enough 1"}),
        )
        .await;
    assert_eq!(status, 409, "the name is taken");

    // The new account logs in and reaches its station only.
    let li = Console::login_with(&central.url(""), "guangming-1", "光明路网格站 2026")
        .await
        .unwrap();
    let (status, list) = li.get("/api/v1/cases").await;
    assert_eq!((status, list["total"].as_u64()), (200, Some(0)));

    // As an attacker with that account, or a supervisor's: no look at accounts, no change.
    let boss = central.console("super").await.unwrap();
    for who in [&li, &boss] {
        let (status, _) = who.get("/api/v1/operators").await;
        assert_eq!(status, 403);
        let (status, _) = who
            .post(
                "/api/v1/operators",
                json!({"name": "mole", "role": "administrator", "password": "long enough 1"}),
            )
            .await;
        assert_eq!(status, 403);
        let (status, _) = who
            .patch(
                "/api/v1/operators/guangming-1",
                json!({"role": "administrator", "scope": null}),
            )
            .await;
        assert_eq!(status, 403, "no one raises their own account");
        let (status, _) = who
            .put(
                "/api/v1/operators/admin/password",
                json!({"password": "taken over 123"}),
            )
            .await;
        assert_eq!(status, 403);
    }
    let anon = reqwest::Client::new();
    let r = anon
        .get(central.url("/api/v1/operators"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // The administrator may not lock themselves out.
    let (status, _) = admin
        .patch("/api/v1/operators/admin", json!({"disabled": true}))
        .await;
    assert_eq!(status, 409);

    // Disabled: the open session ends at its next request, and the password opens nothing.
    let (status, changed) = admin
        .patch("/api/v1/operators/guangming-1", json!({"disabled": true}))
        .await;
    assert_eq!(
        (status, changed["disabled"].as_bool()),
        (200, Some(true)),
        "{changed}"
    );
    let (status, _) = li.get("/api/v1/cases").await;
    assert_eq!(status, 401);
    assert!(
        Console::login_with(&central.url(""), "guangming-1", "光明路网格站 2026")
            .await
            .is_err()
    );

    // A new password, and enabled again: the new one opens it, the old one does not.
    let (status, _) = admin
        .put(
            "/api/v1/operators/guangming-1/password",
            json!({"password": "新的密码 2026-12"}),
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = admin
        .patch("/api/v1/operators/guangming-1", json!({"disabled": false}))
        .await;
    assert_eq!(status, 200);
    assert!(
        Console::login_with(&central.url(""), "guangming-1", "光明路网格站 2026")
            .await
            .is_err()
    );
    Console::login_with(&central.url(""), "guangming-1", "新的密码 2026-12")
        .await
        .unwrap();

    let (_, all) = admin.get("/api/v1/operators").await;
    let names: Vec<&str> = all["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    assert!(
        names.contains(&"guangming-1") && names.contains(&"station-2"),
        "{all}"
    );
    let (_, audit) = admin.get("/api/v1/operators/audit").await;
    let text = audit.to_string();
    for want in [
        "account created",
        "account changed",
        "account password reset",
    ] {
        assert!(text.contains(want), "{want} in {audit}");
    }
}
