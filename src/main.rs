//! The `scim-operator` command line: parse settings, start telemetry, then run one mode.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use scim_operator::connections::{self, Connection};
use scim_operator::controller::ControllerSettings;
use scim_operator::platform::{PlatformTarget, parse_platform_targets};
use scim_operator::render::{self, Source};
use scim_operator::resources::crds_yaml;
use scim_operator::scim::auth::{ConnectionState, generate_token};
use scim_operator::scim::service::ServiceSettings;
use scim_operator::server::{self, ClusterOptions, LocalOptions};

/// Provision users and groups into Kubernetes over SCIM 2.0 and turn them into access.
///
/// Every flag can also be set with the environment variable shown next to it.
#[derive(Parser)]
#[command(name = "scim-operator", version, about, long_about)]
struct Cli {
    /// Log format: text for people, json for log pipelines.
    #[arg(
        long,
        env = "SCIM_OPERATOR_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions as YAML.
    Crds,
    /// Print every object the operator would apply (ClusterRoleBindings, RoleBindings and
    /// platform config) as YAML in a stable order, for review in a pull request.
    ///
    /// Policies that are refused or partly unresolved are reported on stderr.
    Render {
        /// Read the objects from the cluster in KUBECONFIG.
        #[arg(long, conflicts_with = "from", required_unless_present = "from")]
        from_cluster: bool,
        /// Read the objects from the *.yaml files under this folder, at any depth.
        #[arg(long)]
        from: Option<PathBuf>,
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// Print who gains (+) and who loses (-) which access between two states, person by
    /// person.
    ///
    /// Exits 0 when no one's access changes, 1 when someone's does and 2 on error, so that
    /// CI can tell a change from a failure (`scim-operator diff ... || [ $? -eq 1 ]`).
    Diff {
        /// The state before: `cluster`, or a folder of manifests.
        #[arg(long)]
        before: Source,
        /// The state after: `cluster`, or a folder of manifests.
        #[arg(long, required_unless_present = "after_overlay")]
        after: Option<Source>,
        /// The state before with the AccessPolicies under this folder (a pull request's)
        /// replacing or adding policies by name.
        #[arg(long, conflicts_with = "after")]
        after_overlay: Option<PathBuf>,
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// Serve SCIM without a cluster: objects are YAML files under --data, and the bindings
    /// that the policies in <data>/policies imply are written under <data>/output.
    Local {
        /// Address to listen on.
        #[arg(long, env = "SCIM_OPERATOR_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Folder for the identities, the policies and the output.
        #[arg(long, env = "SCIM_OPERATOR_DATA")]
        data: PathBuf,
        /// Tenant the token writes into (the namespace the policies name as `tenant`).
        #[arg(long, env = "SCIM_OPERATOR_TENANT", default_value = "default")]
        tenant: String,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Serve SCIM and run the controller against the cluster in KUBECONFIG (or in-cluster).
    Run {
        /// Address the SCIM API listens on.
        #[arg(long, env = "SCIM_OPERATOR_LISTEN", default_value = "0.0.0.0:8080")]
        listen: SocketAddr,
        /// Address of /metrics, /healthz and /readyz; none when unset.
        #[arg(long, env = "SCIM_OPERATOR_METRICS_LISTEN")]
        metrics_listen: Option<SocketAddr>,
        /// Tenant namespace of SCIM_OPERATOR_TOKEN, and the only namespace whose identities
        /// are served. When unset, tokens come from connections and every namespace is
        /// served.
        #[arg(long, env = "SCIM_OPERATOR_NAMESPACE")]
        namespace: Option<String>,
        /// Namespace holding connections and token hashes (normally the operator's own).
        #[arg(long, env = "SCIM_OPERATOR_OPERATOR_NAMESPACE")]
        operator_namespace: Option<String>,
        /// Run the controller only while holding a Lease, so one replica reconciles.
        #[arg(long, env = "SCIM_OPERATOR_LEADER_ELECTION")]
        leader_election: bool,
        /// Name of the Lease, in the operator namespace.
        #[arg(
            long,
            env = "SCIM_OPERATOR_LEASE_NAME",
            default_value = "scim-operator-leader"
        )]
        lease_name: String,
        /// Serve SCIM only; do not run the controller.
        #[arg(long, env = "SCIM_OPERATOR_NO_CONTROLLER")]
        no_controller: bool,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Manage the access tokens of IdP connections.
    Token {
        #[command(subcommand)]
        action: TokenAction,
        #[command(flatten)]
        target: OperatorNamespace,
    },
    /// Manage IdP connections: which tenant namespace each writes into, and its state.
    Connection {
        #[command(subcommand)]
        action: ConnectionAction,
        #[command(flatten)]
        target: OperatorNamespace,
    },
}

#[derive(Args)]
struct OperatorNamespace {
    /// Namespace holding connections and token hashes.
    #[arg(
        long,
        env = "SCIM_OPERATOR_OPERATOR_NAMESPACE",
        default_value = "scim-operator",
        global = true
    )]
    operator_namespace: String,
}

#[derive(Subcommand)]
enum TokenAction {
    /// Make a token for a connection and print it once; only its hash is stored.
    Create {
        /// The connection the token authenticates.
        #[arg(long)]
        connection: String,
    },
    /// List tokens (names and dates, never the tokens).
    List {
        /// Only the tokens of this connection.
        #[arg(long)]
        connection: Option<String>,
    },
    /// Revoke a token: the IdP using it is refused at once.
    Revoke {
        /// Name of the token, as `token list` prints it.
        name: String,
    },
}

#[derive(Subcommand)]
enum ConnectionAction {
    /// Create or update a connection.
    Create {
        /// Name of the connection, such as okta-prod.
        name: String,
        /// Namespace its users and groups are written into.
        #[arg(long)]
        tenant: String,
    },
    /// List connections.
    List,
    /// Answer the connection's requests with 503 and Retry-After until resumed.
    Pause {
        /// Name of the connection.
        name: String,
    },
    /// Serve the connection's requests again.
    Resume {
        /// Name of the connection.
        name: String,
    },
    /// Refuse the connection's requests with 403; its identities stay.
    Disable {
        /// Name of the connection.
        name: String,
    },
}

#[derive(Args)]
struct CommonArgs {
    /// Bearer token the IdP sends, from the environment only. In the local mode, and with
    /// --namespace, one is generated and printed once when unset.
    #[arg(
        long = "token-from-env",
        env = "SCIM_OPERATOR_TOKEN",
        hide = true,
        hide_env_values = true
    )]
    token: Option<String>,
    /// Public base URL of the SCIM API, used in meta.location (for example
    /// https://scim.example.com/scim/v2). Derived from the Host header when unset.
    #[arg(long, env = "SCIM_OPERATOR_PUBLIC_URL")]
    public_url: Option<String>,
    /// Largest page a list answers.
    #[arg(long, env = "SCIM_OPERATOR_MAX_PAGE_SIZE", default_value_t = 1000)]
    max_page_size: usize,
    #[command(flatten)]
    settings: SettingsArgs,
    /// Largest share of a policy's subjects, in percent, that one pass may revoke without an
    /// explicit reason in the directory (deactivation, deletion, leaving a group); a pass
    /// that would revoke more keeps them and says so in the policy's Degraded condition.
    /// 100 turns this guard off.
    #[arg(
        long,
        env = "SCIM_OPERATOR_MAX_REVOCATION_PERCENT",
        default_value_t = 50.0,
        value_parser = parse_percent
    )]
    max_revocation_percent: f64,
}

/// What access the policies imply: subject names, allowed roles and platform targets.
#[derive(Args)]
struct SettingsArgs {
    /// Prefix of User subjects; match the API server's --oidc-username-prefix.
    #[arg(long, env = "SCIM_OPERATOR_USER_PREFIX", default_value = "")]
    user_prefix: String,
    /// Prefix of Group subjects; match the API server's --oidc-groups-prefix.
    #[arg(long, env = "SCIM_OPERATOR_GROUP_PREFIX", default_value = "")]
    group_prefix: String,
    /// Roles that policies may grant, as ClusterRole/NAME or Role/NAME, comma separated.
    /// Any role when unset.
    #[arg(long, env = "SCIM_OPERATOR_ALLOWED_ROLES", value_delimiter = ',')]
    allowed_roles: Option<Vec<String>>,
    /// A data platform that receives access configuration, as
    /// name=NAME,format=json|trino,kind=ConfigMap|Secret,namespace=NS,object=NAME[,tenant=T].
    /// Repeatable; one value may also list several targets, each starting at name=.
    #[arg(long = "platform-target", env = "SCIM_OPERATOR_PLATFORM_TARGETS")]
    platform_targets: Vec<String>,
}

impl SettingsArgs {
    /// The settings `render` and `diff` build with; the revocation guard only concerns
    /// passes over existing bindings, which they do not make.
    fn controller_settings(&self) -> ControllerSettings {
        ControllerSettings {
            user_prefix: self.user_prefix.clone(),
            group_prefix: self.group_prefix.clone(),
            allowed_roles: self.allowed_roles.clone(),
            ..ControllerSettings::default()
        }
    }

    fn platform_targets(&self) -> anyhow::Result<Vec<PlatformTarget>> {
        Ok(parse_platform_targets(&self.platform_targets)?)
    }
}

/// A percentage from 0 to 100.
fn parse_percent(value: &str) -> Result<f64, String> {
    let percent: f64 = value
        .trim()
        .parse()
        .map_err(|_| format!("{value:?} is not a number"))?;
    if (0.0..=100.0).contains(&percent) {
        Ok(percent)
    } else {
        Err(format!("{value:?} is not between 0 and 100"))
    }
}

impl CommonArgs {
    fn controller_settings(&self) -> ControllerSettings {
        ControllerSettings {
            user_prefix: self.settings.user_prefix.clone(),
            group_prefix: self.settings.group_prefix.clone(),
            allowed_roles: self.settings.allowed_roles.clone(),
            // At 100% no pass can revoke more than all, so the guard is off.
            max_revocation_ratio: (self.max_revocation_percent < 100.0)
                .then_some(self.max_revocation_percent / 100.0),
        }
    }

    fn service_settings(&self) -> ServiceSettings {
        ServiceSettings {
            max_page_size: self.max_page_size,
        }
    }

    /// The token from the environment, or a new one printed once to stderr.
    fn token_or_generate(&self) -> String {
        match &self.token {
            Some(token) if !token.is_empty() => token.clone(),
            _ => {
                let token = generate_token();
                eprintln!("SCIM_OPERATOR_TOKEN was not set; this run accepts the bearer token:");
                eprintln!("{token}");
                token
            }
        }
    }
}

fn init_telemetry(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Prints the objects the operator would apply for `source`, and its warnings on stderr.
async fn render_command(source: Source, settings: &SettingsArgs) -> anyhow::Result<()> {
    let targets = settings.platform_targets()?;
    let snapshot = render::fetch_source(&source).await?;
    let rendered = render::build_rendered(&snapshot, &settings.controller_settings(), &targets)?;
    for warning in rendered.warnings() {
        eprintln!("warning: {warning}");
    }
    print!("{}", render::build_render_yaml(&rendered)?);
    Ok(())
}

/// Prints the access changes between two states; returns whether there are any.
async fn diff_command(
    before: Source,
    after: Option<Source>,
    after_overlay: Option<PathBuf>,
    settings: &SettingsArgs,
) -> anyhow::Result<bool> {
    let targets = settings.platform_targets()?;
    let controller = settings.controller_settings();
    let (first, second) =
        render::fetch_diff_sides(&before, after.as_ref(), after_overlay.as_deref()).await?;
    let access = |snapshot| -> anyhow::Result<render::AccessMap> {
        let rendered = render::build_rendered(snapshot, &controller, &targets)?;
        Ok(render::build_access(&rendered, &controller))
    };
    let changes = render::build_access_diff(&access(&first)?, &access(&second)?);
    print!("{}", render::format_access_diff(&changes));
    eprintln!("{}", render::format_access_summary(&changes));
    Ok(!changes.is_empty())
}

async fn client() -> anyhow::Result<kube::Client> {
    kube::Client::try_default()
        .await
        .context("failed to load a kubeconfig (KUBECONFIG) or the in-cluster configuration")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds => {
            print!("{}", crds_yaml().context("failed to render the CRDs")?);
        }
        Command::Render {
            from_cluster,
            from,
            settings,
        } => {
            let source = match from {
                Some(dir) if !from_cluster => Source::Folder(dir),
                _ => Source::Cluster,
            };
            render_command(source, &settings).await?;
        }
        Command::Diff {
            before,
            after,
            after_overlay,
            settings,
        } => {
            let code = match diff_command(before, after, after_overlay, &settings).await {
                Ok(changed) => i32::from(changed),
                Err(error) => {
                    eprintln!("error: {error:#}");
                    2
                }
            };
            // Exiting skips destructors, so what was printed is flushed first.
            std::io::stdout().flush()?;
            std::process::exit(code);
        }
        Command::Local {
            listen,
            data,
            tenant,
            common,
        } => {
            init_telemetry(cli.log_format);
            let options = LocalOptions {
                listen,
                data,
                tenant,
                token: common.token_or_generate(),
                public_url: common.public_url.clone(),
                service: common.service_settings(),
                controller: common.controller_settings(),
                platform_targets: common.settings.platform_targets()?,
            };
            server::run_local(options).await?;
        }
        Command::Run {
            listen,
            metrics_listen,
            namespace,
            operator_namespace,
            leader_election,
            lease_name,
            no_controller,
            common,
        } => {
            init_telemetry(cli.log_format);
            let static_token = match (&namespace, &operator_namespace) {
                (Some(_), None) => Some(common.token_or_generate()),
                (Some(_), Some(_)) => common.token.clone().filter(|t| !t.is_empty()),
                (None, Some(_)) => None,
                (None, None) => anyhow::bail!(
                    "set --namespace (with SCIM_OPERATOR_TOKEN) or --operator-namespace (with \
                     connections and tokens), or both"
                ),
            };
            let options = ClusterOptions {
                listen,
                metrics_listen,
                namespace,
                operator_namespace,
                static_token,
                leader_election,
                lease_name,
                run_controller: !no_controller,
                public_url: common.public_url.clone(),
                service: common.service_settings(),
                controller: common.controller_settings(),
                platform_targets: common.settings.platform_targets()?,
            };
            server::run_cluster(client().await?, options).await?;
        }
        Command::Token { action, target } => {
            let ns = target.operator_namespace;
            match action {
                TokenAction::Create { connection } => {
                    let (name, token) =
                        connections::create_token(client().await?, &ns, &connection).await?;
                    eprintln!(
                        "created token {name} for connection {connection}; it is shown once:"
                    );
                    println!("{token}");
                }
                TokenAction::List { connection } => {
                    let tokens =
                        connections::list_tokens(client().await?, &ns, connection.as_deref())
                            .await?;
                    println!("{:<40} {:<24} CREATED", "NAME", "CONNECTION");
                    for t in tokens {
                        println!("{:<40} {:<24} {}", t.name, t.connection, t.created);
                    }
                }
                TokenAction::Revoke { name } => {
                    connections::revoke_token(client().await?, &ns, &name).await?;
                    println!("revoked token {name}");
                }
            }
        }
        Command::Connection { action, target } => {
            let ns = target.operator_namespace;
            let client = client().await?;
            let set_state = |name: String, state: ConnectionState| {
                let (client, ns) = (client.clone(), ns.clone());
                async move {
                    let mut connection =
                        connections::get_connection(client.clone(), &ns, &name).await?;
                    connection.state = state;
                    connections::apply_connection(client, &ns, &connection).await?;
                    println!("connection {name} is {}", state.as_str());
                    anyhow::Ok(())
                }
            };
            match action {
                ConnectionAction::Create { name, tenant } => {
                    let connection = Connection {
                        name: name.clone(),
                        tenant,
                        state: ConnectionState::Active,
                    };
                    connections::apply_connection(client, &ns, &connection).await?;
                    println!(
                        "connection {name} writes into namespace {}",
                        connection.tenant
                    );
                }
                ConnectionAction::List => {
                    println!("{:<24} {:<32} STATE", "NAME", "TENANT");
                    for c in connections::list_connections(client, &ns).await? {
                        println!("{:<24} {:<32} {}", c.name, c.tenant, c.state.as_str());
                    }
                }
                ConnectionAction::Pause { name } => {
                    set_state(name, ConnectionState::Paused).await?
                }
                ConnectionAction::Resume { name } => {
                    set_state(name, ConnectionState::Active).await?
                }
                ConnectionAction::Disable { name } => {
                    set_state(name, ConnectionState::Disabled).await?
                }
            }
        }
    }
    Ok(())
}
