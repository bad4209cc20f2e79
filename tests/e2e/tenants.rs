//! Tenant registration tokens: open registration admits only the `default` tenant; another
//! tenant takes registrations only with its own token, made by `homeserver admin create-tenant`.

use serde_json::{Value, json};

use crate::harness::{Resp, Server};

async fn register(s: &Server, name: &str, tenant: &str, token: Option<&str>) -> Resp {
    let mut body = json!({"username": name, "password": "password-1", "tenant_id": tenant});
    if let Some(t) = token {
        body["registration_token"] = Value::from(t);
    }
    s.post("/v1/auth/register", None, body).await
}

#[tokio::test]
async fn open_registration_admits_other_tenants_only_with_their_token() {
    let s = Server::start().await;
    let acme = s.create_tenant("acme", &[]);
    assert!(acme.starts_with("swt_") && acme.len() > 40, "{acme}");
    let globex = s.create_tenant("globex", &[]);
    assert_ne!(acme, globex);

    const REFUSED: (u16, &str) = (403, "SW_AUTH_INSUFFICIENT_PERMISSION");
    register(&s, "mallory", "acme", None).await.expect(REFUSED.0, REFUSED.1);
    register(&s, "mallory", "acme", Some("swt_guess")).await.expect(REFUSED.0, REFUSED.1);
    register(&s, "mallory", "acme", Some("")).await.expect(REFUSED.0, REFUSED.1);
    register(&s, "mallory", "acme", Some(&globex)).await.expect(REFUSED.0, REFUSED.1);
    register(&s, "mallory", "acme", Some(&acme[..acme.len() - 1])).await.expect(REFUSED.0, REFUSED.1);
    register(&s, "mallory", "nope", Some(&acme)).await.expect(404, "SW_TENANT_NOT_FOUND");

    // The default tenant stays open; a token is simply not needed there.
    let r = s.post("/v1/auth/register", None, json!({"username": "dora", "password": "password-1"})).await;
    assert_eq!(r.ok()["tenant_id"], "default");
    register(&s, "dan", "default", None).await.expect(201, "");

    let r = register(&s, "wile", "acme", Some(&acme)).await;
    let token = r.ok()["access_token"].as_str().unwrap().to_string();
    assert_eq!(s.get("/v1/auth/whoami", Some(&token)).await.ok()["tenant_id"], "acme");
    register(&s, "gina", "globex", Some(&globex)).await.expect(201, "");

    // Updating the tenant's limits keeps its token and prints none.
    let (ok, out) = s.cli(&["admin", "create-tenant", "acme", "--send-burst", "9"]);
    assert!(ok && !out.contains("registration_token"), "{out}");
    register(&s, "road", "acme", Some(&acme)).await.expect(201, "");

    // A new token replaces the old one.
    let (ok, out) = s.cli(&["admin", "create-tenant", "acme", "--new-registration-token"]);
    assert!(ok, "{out}");
    let fresh = out.lines().find_map(|l| l.strip_prefix("registration_token: ")).expect(&out).to_string();
    assert_ne!(fresh, acme);
    register(&s, "runner", "acme", Some(&acme)).await.expect(REFUSED.0, REFUSED.1);
    register(&s, "runner", "acme", Some(&fresh)).await.expect(201, "");
    // The token is stored hashed: it is nowhere in the database file.
    let db = std::fs::read(s.data_dir().join("homeserver.db")).unwrap();
    let wal = std::fs::read(s.data_dir().join("homeserver.db-wal")).unwrap_or_default();
    for bytes in [db, wal] {
        assert!(!bytes.windows(fresh.len()).any(|w| w == fresh.as_bytes()), "the token is stored in the clear");
    }
}

#[tokio::test]
async fn the_server_token_admits_only_the_default_tenant() {
    let s =
        Server::start_with_env(&[("HOMESERVER_REGISTRATION", "token"), ("HOMESERVER_REGISTRATION_TOKEN", "s3cret")])
            .await;
    let acme = s.create_tenant("acme", &[]);
    register(&s, "a", "default", Some("s3cret")).await.expect(201, "");
    register(&s, "b", "default", None).await.expect(403, "SW_AUTH_INSUFFICIENT_PERMISSION");
    register(&s, "b", "acme", Some("s3cret")).await.expect(403, "SW_AUTH_INSUFFICIENT_PERMISSION");
    register(&s, "b", "acme", Some(&acme)).await.expect(201, "");

    let closed = Server::start_with_env(&[("HOMESERVER_REGISTRATION", "closed")]).await;
    let token = closed.create_tenant("acme", &[]);
    register(&closed, "c", "acme", Some(&token)).await.expect(403, "SW_AUTH_INSUFFICIENT_PERMISSION");
    // The admin CLI still makes accounts in any tenant.
    let (ok, out) = closed.cli(&["admin", "create-user", "c", "--tenant", "acme", "--password", "password-1"]);
    assert!(ok && out.contains("tenant acme"), "{out}");
}
