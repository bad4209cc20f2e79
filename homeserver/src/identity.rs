//! Identity: tenants, participants, passwords and bearer tokens.
//!
//! Passwords are hashed with argon2id on the blocking pool (it costs tens of milliseconds and
//! 19 MiB by design), a few at a time ([`Passwords`]). Tokens are 256-bit random strings; only
//! their SHA-256 is stored, which is enough for secrets of that entropy and keeps the
//! per-request lookup cheap.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use sha2::{Digest, Sha256};

use crate::clock::now_secs;
use crate::config::{Config, Limits, RegistrationMode, TenantLimits};
use crate::error::{ApiError, ApiResult};
use crate::ids;
use crate::ratelimit::Throttle;
use crate::storage::{Participant, RefreshOutcome, Store, Tenant, TokenOwner, Workspace};

pub const DEFAULT_TENANT: &str = "default";

/// The token pair handed to a client.
pub struct IssuedTokens {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: i64,
}

pub fn token_hash(token: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}

/// Whether two secrets are equal, in time that depends on neither: both are hashed first, and
/// the digests compared without an early exit.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Password checks that may wait for a turn beyond those running; past that, 503.
pub const MAX_WAITING_PASSWORD_CHECKS: usize = 64;

/// Password work and who may ask for it (`docs/api.md`, "Login limits"):
/// - hashes and verifications run on the blocking pool, at most
///   `limits.password_hash_concurrency` at once; up to [`MAX_WAITING_PASSWORD_CHECKS`] more wait
///   their turn, and any beyond are answered 503 `SW_UNAVAILABLE` at once, so a flood of logins
///   costs bounded CPU, memory (19 MiB per running hash) and queue;
/// - every password check (a password grant, a registration) takes a token of its client
///   address's bucket (`limits.login_per_address`);
/// - failed logins take a token of the account name's bucket
///   (`limits.login_failures_per_account`); a name whose bucket is empty is answered 429 before
///   any hashing. Names that exist and names that do not are counted alike;
/// - an unknown account is verified against a dummy hash with the same parameters, so a wrong
///   name costs what a wrong password costs and timing does not tell which names exist.
pub struct Passwords {
    per_address: Throttle,
    failures_per_account: Throttle,
    pool: Arc<tokio::sync::Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
}

/// One place in the password queue, given back when dropped (even if the request is).
struct QueuePlace<'a>(&'a AtomicUsize);

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Passwords {
    pub fn new(limits: &Limits) -> Passwords {
        Passwords::with_queue(limits, MAX_WAITING_PASSWORD_CHECKS)
    }

    fn with_queue(limits: &Limits, max_waiting: usize) -> Passwords {
        Passwords {
            per_address: Throttle::new(limits.login_per_address),
            failures_per_account: Throttle::new(limits.login_failures_per_account),
            pool: Arc::new(tokio::sync::Semaphore::new(limits.password_hash_concurrency.max(1))),
            waiting: AtomicUsize::new(0),
            max_waiting,
        }
    }

    /// Takes one password check of `addr`'s allowance.
    pub fn admit_address(&self, addr: IpAddr) -> ApiResult<()> {
        self.per_address.try_take(&addr.to_string(), Instant::now()).map_err(|secs| {
            ApiError::RateLimited(format!("too many password attempts from this address; retry in {secs} s"), secs)
        })
    }

    /// Hashes a new password (argon2id, default parameters, random salt).
    pub async fn hash(&self, password: String) -> ApiResult<String> {
        self.run(move || {
            let hashed: Result<PasswordHash, _> = Argon2::default().hash_password(password.as_bytes());
            hashed.map(|h| h.to_string()).map_err(|e| ApiError::internal(format!("argon2: {e}")))
        })
        .await?
    }

    /// Whether `password` matches `hash`. Without a hash (no such account, or one without a
    /// password) it verifies against a dummy hash and answers false: the same work either way.
    pub async fn verify(&self, password: String, hash: Option<String>) -> ApiResult<bool> {
        self.run(move || {
            let matches = |h: &str| Argon2::default().verify_password(password.as_bytes(), h).is_ok();
            match hash {
                Some(h) => matches(&h),
                None => {
                    let _ = matches(dummy_hash());
                    false
                }
            }
        })
        .await
    }

    /// Runs password work on the blocking pool once a turn is free. The turn is held until the
    /// work ends, even if the request that asked for it has gone.
    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> ApiResult<T> {
        let permit = match self.pool.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_waiting {
                    self.waiting.fetch_sub(1, Ordering::SeqCst);
                    return Err(ApiError::Unavailable("too many password checks waiting; retry shortly".into()));
                }
                let _place = QueuePlace(&self.waiting);
                self.pool.clone().acquire_owned().await.map_err(ApiError::internal)?
            }
        };
        tokio::task::spawn_blocking(move || {
            let _turn = permit;
            work()
        })
        .await
        .map_err(ApiError::internal)
    }
}

/// An argon2id hash of a random secret nobody knows, made with the parameters of real hashes
/// the first time an unknown account logs in.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let secret = ids::new_access_token();
        let hashed: Result<PasswordHash, _> = Argon2::default().hash_password(secret.as_bytes());
        hashed.map(|h| h.to_string()).unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot make the dummy password hash");
            String::new()
        })
    })
}

/// Makes sure the `default` tenant exists, with the configured default limits.
pub async fn ensure_default_tenant(store: &Store, limits: &TenantLimits) -> Result<(), sqlx::Error> {
    store.create_tenant(&new_tenant(DEFAULT_TENANT, "Default", limits)).await?;
    Ok(())
}

pub fn new_tenant(slug: &str, name: &str, limits: &TenantLimits) -> Tenant {
    Tenant {
        id: slug.to_string(),
        name: name.to_string(),
        max_participants: limits.max_participants,
        send_rate_per_s: limits.send_rate_per_s,
        send_burst: limits.send_burst,
        created_at: now_secs(),
    }
}

pub fn validate_password(password: &str) -> ApiResult<()> {
    let n = password.chars().count();
    if n < 8 {
        return Err(ApiError::bad_request("password must be at least 8 characters"));
    }
    if password.len() > 1024 {
        return Err(ApiError::bad_request("password must be at most 1024 bytes"));
    }
    Ok(())
}

/// The display name as stored: neutralised by [`crate::names::clean`], 1 to 128 characters.
pub fn clean_display_name(name: &str) -> ApiResult<String> {
    let name = crate::names::clean("display_name", name, crate::names::Lines::One)?;
    if name.is_empty() || name.chars().count() > 128 {
        return Err(ApiError::bad_request("display_name must be 1 to 128 characters"));
    }
    Ok(name)
}

pub fn validate_display_name(name: &str) -> ApiResult<()> {
    clean_display_name(name).map(drop)
}

/// A local account to create.
pub struct NewAccount<'a> {
    pub username: &'a str,
    pub password: Option<&'a str>,
    pub display_name: Option<&'a str>,
    pub tenant_id: &'a str,
    pub is_admin: bool,
}

/// Creates a local participant with its personal workspace. `from`, the client's address for a
/// registration over the API, pays for the password hash out of that address's allowance.
pub async fn create_participant(
    store: &Store,
    config: &Config,
    passwords: &Passwords,
    account: NewAccount<'_>,
    from: Option<IpAddr>,
) -> ApiResult<(Participant, Workspace)> {
    let NewAccount { username, password, display_name, tenant_id, is_admin } = account;
    if !ids::is_local_id(username) {
        return Err(ApiError::bad_request("username must match [a-z0-9._=-]{1,64}"));
    }
    if crate::rooms::service::is_reserved_local_id(username) {
        return Err(ApiError::bad_request("usernames starting with _ are kept for the server's own participants"));
    }
    if let Some(p) = password {
        validate_password(p)?;
    }
    let display_name = display_name.map(clean_display_name).transpose()?;
    if !ids::is_tenant_slug(tenant_id) || store.tenant(tenant_id).await?.is_none() {
        return Err(ApiError::TenantNotFound);
    }
    let hash = match password {
        Some(p) => {
            if let Some(addr) = from {
                passwords.admit_address(addr)?;
            }
            Some(passwords.hash(p.to_string()).await?)
        }
        None => None,
    };
    let now = now_secs();
    let participant = Participant {
        id: ids::new_participant_id(),
        tenant_id: tenant_id.to_string(),
        local_id: username.to_string(),
        server_name: config.server_name.clone(),
        fqid: format!("@{username}:{}", config.server_name),
        display_name: display_name.unwrap_or_else(|| username.to_string()),
        is_admin,
        created_at: now,
    };
    let workspace = Workspace {
        id: ids::new_workspace_id(),
        tenant_id: tenant_id.to_string(),
        owner_id: participant.id.clone(),
        name: format!("{}'s workspace", participant.display_name),
        personal: true,
        created_at: now,
    };
    if !store.create_participant(&participant, hash.as_deref(), &workspace).await? {
        return Err(ApiError::Conflict(format!("username {username:?} is taken")));
    }
    Ok((participant, workspace))
}

/// What `POST /v1/auth/register` asks for.
pub struct Registration<'a> {
    pub username: &'a str,
    pub password: &'a str,
    pub display_name: Option<&'a str>,
    pub tenant_id: Option<&'a str>,
    pub registration_token: Option<&'a str>,
}

/// Self-service registration (`docs/api.md`, "Auth"). The server's `registration` mode governs
/// the `default` tenant: `open` admits anyone, `token` the server's `registration_token`,
/// `closed` nobody. Any other tenant admits only holders of its own registration token (made by
/// `homeserver admin create-tenant`), unless registration is `closed`. An unknown tenant is 404
/// `SW_TENANT_NOT_FOUND`; a refusal is 403 `SW_AUTH_INSUFFICIENT_PERMISSION`.
pub async fn register(
    store: &Store,
    config: &Config,
    passwords: &Passwords,
    from: IpAddr,
    r: Registration<'_>,
) -> ApiResult<(Participant, Workspace)> {
    let mode = config.registration_mode();
    if mode == RegistrationMode::Closed {
        return Err(ApiError::InsufficientPermission("registration is closed on this server".into()));
    }
    let tenant = r.tenant_id.unwrap_or(DEFAULT_TENANT);
    if !ids::is_tenant_slug(tenant) {
        return Err(ApiError::TenantNotFound);
    }
    let Some(tenant_token_hash) = store.tenant_registration_token_hash(tenant).await? else {
        return Err(ApiError::TenantNotFound);
    };
    let given = r.registration_token.filter(|t| !t.is_empty() && t.len() <= 256);
    let holds_tenant_token =
        given.zip(tenant_token_hash.as_deref()).is_some_and(|(t, stored)| same_secret(&token_hash(t), stored));
    let admitted = if tenant == DEFAULT_TENANT {
        holds_tenant_token
            || match mode {
                RegistrationMode::Open => true,
                RegistrationMode::Token => given
                    .zip(config.registration_token.as_deref())
                    .is_some_and(|(t, expected)| same_secret(t, expected)),
                RegistrationMode::Closed => false,
            }
    } else {
        holds_tenant_token
    };
    if !admitted {
        return Err(ApiError::InsufficientPermission(if tenant == DEFAULT_TENANT {
            "a valid registration_token is required".into()
        } else {
            format!("registering in tenant {tenant:?} needs its registration_token")
        }));
    }
    let account = NewAccount {
        username: r.username,
        password: Some(r.password),
        display_name: r.display_name,
        tenant_id: tenant,
        is_admin: false,
    };
    create_participant(store, config, passwords, account, Some(from)).await
}

/// Starts a session and answers its first token pair.
pub async fn issue_tokens(store: &Store, config: &Config, participant_id: &str) -> ApiResult<IssuedTokens> {
    let now = now_secs();
    let access = ids::new_access_token();
    let refresh = ids::new_refresh_token();
    store
        .create_session(
            &ids::new_session_id(),
            participant_id,
            now,
            (&token_hash(&access), now + config.access_token_ttl_secs),
            (&token_hash(&refresh), now + config.refresh_token_ttl_secs),
        )
        .await?;
    Ok(IssuedTokens { access_token: access, refresh_token: refresh, expires_in: config.access_token_ttl_secs })
}

/// Password grant. Unknown users and wrong passwords answer the same, and cost the same: one
/// argon2 verification each. Limits: see [`Passwords`].
pub async fn login(
    store: &Store,
    config: &Config,
    passwords: &Passwords,
    from: IpAddr,
    username: &str,
    password: &str,
) -> ApiResult<IssuedTokens> {
    let bad = || ApiError::InvalidToken("invalid username or password".into());
    // Accept the bare username or the full fqid of a local account.
    let fqid =
        if username.starts_with('@') { username.to_string() } else { format!("@{username}:{}", config.server_name) };
    // A name no account can have is refused before it can cost a hash or a throttle entry (an
    // attacker's made-up names would otherwise fill the per-account table with large keys).
    if ids::parse_fqid(&fqid).is_none() {
        return Err(bad());
    }
    let locked =
        |secs| ApiError::RateLimited(format!("too many failed logins for this account; retry in {secs} s"), secs);
    // A locked account costs no hash and no allowance of the address.
    passwords.failures_per_account.check(&fqid, Instant::now()).map_err(locked)?;
    passwords.admit_address(from)?;
    // Taken now and given back on success: concurrent attempts cannot all slip past the check.
    passwords.failures_per_account.try_take(&fqid, Instant::now()).map_err(locked)?;
    let (participant, hash) = match store.credentials(&fqid).await? {
        Some((p, hash)) => (Some(p), hash),
        None => (None, None),
    };
    let verified = match passwords.verify(password.to_string(), hash).await {
        Ok(v) => v,
        Err(e) => {
            // Not an attempt that was judged (the pool was full): no failure to count.
            passwords.failures_per_account.refund(&fqid);
            return Err(e);
        }
    };
    match participant {
        Some(p) if verified => {
            passwords.failures_per_account.refund(&fqid);
            issue_tokens(store, config, &p.id).await
        }
        _ => Err(bad()),
    }
}

pub async fn refresh(
    store: &Store,
    cache: &TokenCache,
    config: &Config,
    refresh_token: &str,
) -> ApiResult<IssuedTokens> {
    let now = now_secs();
    let access = ids::new_access_token();
    let refresh = ids::new_refresh_token();
    let outcome = store
        .rotate_refresh_token(
            &token_hash(refresh_token),
            now,
            (&token_hash(&access), now + config.access_token_ttl_secs),
            (&token_hash(&refresh), now + config.refresh_token_ttl_secs),
        )
        .await?;
    match outcome {
        RefreshOutcome::Rotated(_, session_id) => {
            cache.forget_session(&session_id);
            Ok(IssuedTokens { access_token: access, refresh_token: refresh, expires_in: config.access_token_ttl_secs })
        }
        RefreshOutcome::Invalid => Err(ApiError::InvalidToken("unknown, expired or revoked refresh token".into())),
        RefreshOutcome::Reused(session_id) => {
            cache.forget_session(&session_id);
            tracing::warn!("refresh token presented twice; session revoked");
            Err(ApiError::InvalidToken("refresh token already used; the session has been revoked".into()))
        }
    }
}

/// Recently resolved access tokens, so a request costs no database read to authenticate.
/// Every revocation goes through this process (logout, rotation, reuse detection), which drops
/// the session's entries at once; entries also age out after [`TokenCache::TTL`] so changes to
/// the participant made by the admin CLI show up.
///
/// A lookup that began before its session was invalidated is not cached: otherwise a request
/// racing a logout could put the dead token back for a whole TTL.
pub struct TokenCache {
    inner: std::sync::RwLock<CacheInner>,
    /// Counts revocations, so open streams look at their own token again at once.
    revocations: tokio::sync::watch::Sender<u64>,
}

impl Default for TokenCache {
    fn default() -> Self {
        TokenCache { inner: Default::default(), revocations: tokio::sync::watch::channel(0).0 }
    }
}

#[derive(Default)]
struct CacheInner {
    entries: std::collections::HashMap<String, (TokenOwner, std::time::Instant)>,
    /// session → when it was last invalidated; kept for one TTL.
    invalidated: std::collections::HashMap<String, std::time::Instant>,
}

impl TokenCache {
    pub const TTL: std::time::Duration = std::time::Duration::from_secs(30);
    const MAX_ENTRIES: usize = 100_000;

    fn get(&self, hash: &str) -> Option<TokenOwner> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.entries.get(hash).filter(|(_, at)| at.elapsed() < Self::TTL).map(|(o, _)| o.clone())
    }

    /// Caches `owner`, looked up at `looked_up_at`, unless its session was invalidated since.
    fn put(&self, hash: String, owner: TokenOwner, looked_up_at: std::time::Instant) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if inner.invalidated.get(&owner.session_id).is_some_and(|at| *at >= looked_up_at) {
            return;
        }
        if inner.entries.len() >= Self::MAX_ENTRIES {
            inner.entries.retain(|_, (_, at)| at.elapsed() < Self::TTL);
            if inner.entries.len() >= Self::MAX_ENTRIES {
                inner.entries.clear();
            }
        }
        inner.entries.insert(hash, (owner, std::time::Instant::now()));
    }

    pub fn forget_session(&self, session_id: &str) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        inner.entries.retain(|_, (o, _)| o.session_id != session_id);
        inner.invalidated.retain(|_, at| at.elapsed() < Self::TTL);
        inner.invalidated.insert(session_id.to_string(), std::time::Instant::now());
        drop(inner);
        self.revocations.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Changes whenever a session is revoked.
    pub fn revocations(&self) -> tokio::sync::watch::Receiver<u64> {
        self.revocations.subscribe()
    }
}

/// Resolves a bearer token to its owner.
pub async fn authenticate(store: &Store, cache: &TokenCache, bearer: &str) -> ApiResult<TokenOwner> {
    if bearer.is_empty() || bearer.len() > 256 {
        return Err(ApiError::InvalidToken("malformed access token".into()));
    }
    let hash = token_hash(bearer);
    let owner = match cache.get(&hash) {
        Some(o) => o,
        None => {
            let looked_up_at = std::time::Instant::now();
            let o = store
                .access_token_owner(&hash)
                .await?
                .ok_or_else(|| ApiError::InvalidToken("unknown or revoked access token".into()))?;
            cache.put(hash, o.clone(), looked_up_at);
            o
        }
    };
    if owner.expires_at <= now_secs() {
        return Err(ApiError::ExpiredToken);
    }
    Ok(owner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(session: &str) -> TokenOwner {
        TokenOwner {
            participant: Participant {
                id: "p".into(),
                tenant_id: "default".into(),
                local_id: "a".into(),
                server_name: "t".into(),
                fqid: "@a:t".into(),
                display_name: "a".into(),
                is_admin: false,
                created_at: 0,
            },
            session_id: session.into(),
            expires_at: i64::MAX,
        }
    }

    #[tokio::test]
    async fn password_work_waits_its_turn_and_a_full_queue_is_refused() {
        use std::time::Duration;
        let limits = Limits { password_hash_concurrency: 1, ..Limits::default() };
        let p = Arc::new(Passwords::with_queue(&limits, 2));
        let waiting_reaches = |n: usize| {
            let p = p.clone();
            async move {
                let wait = async {
                    while p.waiting.load(Ordering::SeqCst) != n {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                };
                tokio::time::timeout(Duration::from_secs(10), wait).await.expect("queue length")
            }
        };
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let first = tokio::spawn({
            let p = p.clone();
            async move {
                p.run(move || {
                    let _ = started_tx.send(());
                    released.recv().ok();
                    1
                })
                .await
            }
        });
        started.await.unwrap();
        let spawn_run = |v: i32| {
            let p = p.clone();
            tokio::spawn(async move { p.run(move || v).await })
        };
        let second = spawn_run(2);
        waiting_reaches(1).await;
        let third = spawn_run(3);
        waiting_reaches(2).await;
        let fourth = p.run(|| 4).await;
        assert!(matches!(fourth, Err(ApiError::Unavailable(_))), "one running and two waiting fill the pool");
        // A waiter that goes away (its client disconnected) gives its place back.
        third.abort();
        assert!(third.await.unwrap_err().is_cancelled());
        waiting_reaches(1).await;
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap().unwrap(), 1);
        assert_eq!(second.await.unwrap().unwrap(), 2);
        assert_eq!(p.waiting.load(Ordering::SeqCst), 0, "every place was given back");
        assert_eq!(p.run(|| 5).await.unwrap(), 5);
    }

    #[tokio::test]
    async fn unknown_accounts_are_verified_against_a_dummy_hash() {
        let p = Passwords::new(&Limits::default());
        let real = p.hash("correct horse".into()).await.unwrap();
        assert!(p.verify("correct horse".into(), Some(real.clone())).await.unwrap());
        assert!(!p.verify("wrong horse".into(), Some(real.clone())).await.unwrap());
        assert!(!p.verify("correct horse".into(), None).await.unwrap());
        assert!(!p.verify(String::new(), None).await.unwrap());
        let dummy = PasswordHash::new(dummy_hash()).expect("the dummy is a real argon2 hash");
        let real = PasswordHash::new(&real).unwrap();
        assert_eq!(dummy.algorithm, real.algorithm);
        assert_eq!(dummy.params, real.params, "same cost as real hashes");
    }

    #[test]
    fn secrets_compare_by_content_only() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
        assert!(!same_secret("", "x"));
    }

    #[test]
    fn a_lookup_racing_a_logout_is_not_cached() {
        let cache = TokenCache::default();
        let started = std::time::Instant::now();
        cache.forget_session("s1");
        cache.put("h".into(), owner("s1"), started);
        assert!(cache.get("h").is_none(), "the session died after the lookup began");
        let later = std::time::Instant::now() + std::time::Duration::from_millis(1);
        cache.put("h".into(), owner("s1"), later);
        assert!(cache.get("h").is_some());
        cache.forget_session("s1");
        assert!(cache.get("h").is_none());
        cache.put("h2".into(), owner("s2"), started);
        assert!(cache.get("h2").is_some(), "other sessions are unaffected");
    }
}
