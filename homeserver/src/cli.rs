//! The `homeserver` command line: `serve` and the `admin` commands.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigFlags, TenantLimits};
use crate::{identity, ids, server};

#[derive(Parser)]
#[command(
    name = "homeserver",
    version,
    about = "A federated chat homeserver speaking the ScaiWave client API.",
    long_about = "A federated chat homeserver speaking the ScaiWave client API.\n\n\
        Run `homeserver serve` to start on embedded defaults: SQLite in ./data, the client API on \
        127.0.0.1:8008, server name `localhost`, open registration on loopback.\n\n\
        Settings come from defaults, then a TOML file (--config), then HOMESERVER_* environment \
        variables (HOMESERVER_ACCESS_TOKEN_TTL_SECS=60, HOMESERVER_TENANT_DEFAULTS__SEND_BURST=5), \
        then flags."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server until SIGINT or SIGTERM.
    Serve {
        #[command(flatten)]
        flags: ConfigFlags,
        /// Client API address [default: 127.0.0.1:8008]; port 0 picks a free port.
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
        /// Server-to-server listener address (off unless given).
        #[arg(long, value_name = "ADDR")]
        federation_listen: Option<std::net::SocketAddr>,
    },
    /// Export and import rooms as ZIP bundles (docs/export-format.md), on the data directory.
    Room {
        #[command(subcommand)]
        command: crate::bundle::cli::RoomCommand,
    },
    /// Administration on the server's data directory (safe while the server runs).
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create a local account with its personal workspace.
    CreateUser {
        /// The local part of the fqid: [a-z0-9._=-]{1,64}.
        name: String,
        /// Password (8+ characters); a random one is generated and printed when omitted.
        #[arg(long)]
        password: Option<String>,
        /// Make the account a server admin.
        #[arg(long)]
        admin: bool,
        /// Tenant the account belongs to.
        #[arg(long, default_value = identity::DEFAULT_TENANT)]
        tenant: String,
        #[arg(long)]
        display_name: Option<String>,
        #[command(flatten)]
        flags: ConfigFlags,
    },
    /// Federation administration.
    Federation {
        #[command(subcommand)]
        command: FederationCommand,
    },
    /// Create a tenant (organisation), or update the limits of an existing one. A new tenant
    /// gets a registration token, printed once: `POST /v1/auth/register` into the tenant needs it.
    CreateTenant {
        /// Tenant id: [a-z0-9_-]{1,64}.
        slug: String,
        /// Human-readable name [default: the slug].
        #[arg(long)]
        name: Option<String>,
        /// Most participants a room of this tenant may hold.
        #[arg(long)]
        max_participants: Option<i64>,
        /// Messages per second the tenant's members may send, sustained.
        #[arg(long)]
        send_rate_per_s: Option<i64>,
        /// Burst of messages allowed above the sustained rate.
        #[arg(long)]
        send_burst: Option<i64>,
        /// Make a new registration token for an existing tenant (the old one stops working).
        #[arg(long)]
        new_registration_token: bool,
        #[command(flatten)]
        flags: ConfigFlags,
    },
}

#[derive(Subcommand)]
enum FederationCommand {
    /// Signing keys.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Make a new signing key. The old one moves to `old_verify_keys`, listed for ever so that
    /// history it signed verifies everywhere; it still signs validly for 30 days (the overlap).
    /// Restart the server to start signing with the new key; peers fetch it on its first
    /// request.
    Rotate {
        /// The old key is compromised: expire it now. Events it signs from now on are refused
        /// by every peer that has fetched the new key document; restart the server at once.
        #[arg(long)]
        revoke: bool,
        #[command(flatten)]
        flags: ConfigFlags,
    },
}

/// glibc keeps freed blocks above its adaptive mmap threshold in the heap; argon2 frees 19 MiB
/// per password hash, so without a fixed threshold every login grows the resident set for
/// good. Large blocks get their own mappings, returned to the system when freed.
fn return_large_frees_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; called once before any thread is started.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

pub fn main() -> ExitCode {
    return_large_frees_to_the_system();
    // rustls must have exactly one process-wide provider (ring) before any TLS is set up.
    federation::install_crypto_provider();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(flags: &ConfigFlags) -> Result<Config, Box<dyn std::error::Error>> {
    Ok(Config::load(flags, std::env::vars())?)
}

fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log));
    // Colours only on a terminal: a log file gets no escape codes, and each request's span
    // fields are not wrapped in them (measurably cheaper per request).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).try_init();
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Command::Serve { flags, listen, federation_listen } => {
            let mut config = load_config(&flags)?;
            if let Some(l) = listen {
                config.listen = l;
            }
            if let Some(f) = federation_listen {
                config.federation_listen = Some(f);
            }
            init_tracing(&config);
            server::serve(config).await
        }
        Command::Admin { command } => admin(command).await,
        Command::Room { command } => crate::bundle::cli::run(command).await,
    }
}

async fn admin(command: AdminCommand) -> Result<(), Box<dyn std::error::Error>> {
    match command {
        AdminCommand::Federation {
            command: FederationCommand::Key { command: KeyCommand::Rotate { revoke, flags } },
        } => {
            let config = load_config(&flags)?;
            let before = crate::signing::Keys::load_or_create(&config.data_dir)?;
            let after = crate::signing::Keys::rotate(&config.data_dir, revoke)?;
            if revoke {
                println!(
                    "rotated: new key {}; old key {} revoked (it verifies only what it signed before now); \
                     restart the server now to sign with the new key",
                    after.current.key_id(),
                    before.current.key_id()
                );
            } else {
                println!(
                    "rotated: new key {} (old key {} stays listed and signs validly for 30 more days); \
                     restart the server to sign with the new key",
                    after.current.key_id(),
                    before.current.key_id()
                );
            }
            Ok(())
        }
        AdminCommand::CreateUser { name, password, admin, tenant, display_name, flags } => {
            let config = load_config(&flags)?;
            let store = server::open_store(&config).await?;
            let generated = password.is_none();
            let password =
                password.unwrap_or_else(|| ids::new_access_token().trim_start_matches("swa_")[..20].to_string());
            let account = identity::NewAccount {
                username: &name,
                password: Some(&password),
                display_name: display_name.as_deref(),
                tenant_id: &tenant,
                is_admin: admin,
            };
            let passwords = identity::Passwords::new(&config.limits);
            let result = identity::create_participant(&store, &config, &passwords, account, None).await;
            store.close().await;
            let (p, _) = result.map_err(|e| format!("cannot create user: {e}"))?;
            println!(
                "created {} (participant_id {}, tenant {}{})",
                p.fqid,
                p.id,
                p.tenant_id,
                if admin { ", server admin" } else { "" }
            );
            if generated {
                println!("password: {password}");
            }
            Ok(())
        }
        AdminCommand::CreateTenant {
            slug,
            name,
            max_participants,
            send_rate_per_s,
            send_burst,
            new_registration_token,
            flags,
        } => {
            if !ids::is_tenant_slug(&slug) {
                return Err("tenant slug must match [a-z0-9_-]{1,64}".into());
            }
            let config = load_config(&flags)?;
            for (what, v) in [
                ("max-participants", max_participants),
                ("send-rate-per-s", send_rate_per_s),
                ("send-burst", send_burst),
            ] {
                if v.is_some_and(|v| v < 1) {
                    return Err(format!("--{what} must be at least 1").into());
                }
            }
            let store = server::open_store(&config).await?;
            let existing = store.tenant(&slug).await?;
            let base = existing.clone().map(|t| TenantLimits {
                max_participants: t.max_participants,
                send_rate_per_s: t.send_rate_per_s,
                send_burst: t.send_burst,
            });
            let d = base.unwrap_or_else(|| config.tenant_defaults.clone());
            let limits = TenantLimits {
                max_participants: max_participants.unwrap_or(d.max_participants),
                send_rate_per_s: send_rate_per_s.unwrap_or(d.send_rate_per_s),
                send_burst: send_burst.unwrap_or(d.send_burst),
            };
            let display = name.or_else(|| existing.as_ref().map(|t| t.name.clone())).unwrap_or_else(|| slug.clone());
            let tenant = identity::new_tenant(&slug, &display, &limits);
            let created = store.create_tenant(&tenant).await?;
            if !created {
                store.update_tenant_limits(&tenant).await?;
            }
            // Only the hash is kept: the token is shown here, once.
            let token = (created || new_registration_token).then(ids::new_registration_token);
            if let Some(t) = &token {
                store.set_tenant_registration_token_hash(&slug, &identity::token_hash(t)).await?;
            }
            store.close().await;
            println!(
                "{} tenant {slug} (max_participants {}, send_rate_per_s {}, send_burst {})",
                if created { "created" } else { "updated" },
                limits.max_participants,
                limits.send_rate_per_s,
                limits.send_burst
            );
            if let Some(t) = token {
                println!("registration_token: {t}");
            }
            Ok(())
        }
    }
}
