//! `/v1/auth/*`: register, token (password grant), refresh, logout, whoami.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::extract::{Caller, ClientAddr, Json, JsonOrForm};
use super::views::data;
use crate::error::{ApiError, ApiResult};
use crate::identity::{self, IssuedTokens};

#[derive(Deserialize)]
pub struct RegisterBody {
    username: String,
    password: String,
    display_name: Option<String>,
    tenant_id: Option<String>,
    registration_token: Option<String>,
}

fn tokens_json(t: &IssuedTokens) -> serde_json::Value {
    json!({
        "access_token": t.access_token,
        "refresh_token": t.refresh_token,
        "token_type": "Bearer",
        "expires_in": t.expires_in,
    })
}

pub async fn register(
    State(st): State<AppState>,
    ClientAddr(from): ClientAddr,
    Json(body): Json<RegisterBody>,
) -> ApiResult<impl IntoResponse> {
    let registration = identity::Registration {
        username: &body.username,
        password: &body.password,
        display_name: body.display_name.as_deref(),
        tenant_id: body.tenant_id.as_deref(),
        registration_token: body.registration_token.as_deref(),
    };
    let (participant, workspace) = identity::register(&st.store, &st.config, &st.passwords, from, registration).await?;
    let tokens = identity::issue_tokens(&st.store, &st.config, &participant.id).await?;
    tracing::info!(fqid = %participant.fqid, tenant = %participant.tenant_id, "registered");
    let mut out = tokens_json(&tokens);
    let obj = out.as_object_mut().expect("tokens are an object");
    obj.insert("participant_id".into(), json!(participant.id));
    obj.insert("fqid".into(), json!(participant.fqid));
    obj.insert("tenant_id".into(), json!(participant.tenant_id));
    obj.insert("workspace_id".into(), json!(workspace.id));
    Ok((StatusCode::CREATED, data(out)))
}

#[derive(Deserialize)]
pub struct TokenBody {
    grant_type: String,
    username: Option<String>,
    password: Option<String>,
    refresh_token: Option<String>,
}

pub async fn token(
    State(st): State<AppState>,
    ClientAddr(from): ClientAddr,
    JsonOrForm(body): JsonOrForm<TokenBody>,
) -> ApiResult<impl IntoResponse> {
    let tokens = match body.grant_type.as_str() {
        "password" => {
            let (Some(u), Some(p)) = (body.username.as_deref(), body.password.as_deref()) else {
                return Err(ApiError::bad_request("the password grant needs username and password"));
            };
            if u.len() > 256 || p.len() > 1024 {
                return Err(ApiError::InvalidToken("invalid username or password".into()));
            }
            identity::login(&st.store, &st.config, &st.passwords, from, u, p).await?
        }
        "refresh_token" => {
            let Some(r) = body.refresh_token.as_deref() else {
                return Err(ApiError::bad_request("the refresh_token grant needs refresh_token"));
            };
            identity::refresh(&st.store, &st.tokens, &st.config, r).await?
        }
        other => return Err(ApiError::bad_request(format!("unsupported grant_type {other:?}"))),
    };
    Ok(data(tokens_json(&tokens)))
}

#[derive(Deserialize)]
pub struct RefreshBody {
    refresh_token: String,
}

pub async fn refresh(State(st): State<AppState>, Json(body): Json<RefreshBody>) -> ApiResult<impl IntoResponse> {
    let tokens = identity::refresh(&st.store, &st.tokens, &st.config, &body.refresh_token).await?;
    Ok(data(tokens_json(&tokens)))
}

pub async fn logout(
    State(st): State<AppState>,
    caller: Caller,
    _: Json<serde_json::Map<String, serde_json::Value>>,
) -> ApiResult<impl IntoResponse> {
    st.store.revoke_session(&caller.session_id).await?;
    st.tokens.forget_session(&caller.session_id);
    Ok(data(json!({})))
}

pub async fn whoami(caller: Caller) -> ApiResult<impl IntoResponse> {
    let p = &caller.participant;
    Ok(data(json!({
        "participant_id": p.id,
        "fqid": p.fqid,
        "tenant_id": p.tenant_id,
        "is_admin": p.is_admin,
        "display_name": p.display_name,
    })))
}
