//! The `scim-operator` command line: parse settings, start telemetry, then run one mode.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use scim_operator::controller::{self, ControllerSettings};
use scim_operator::resources::crds_yaml;
use scim_operator::scim::auth::{Authenticator, generate_token};
use scim_operator::scim::service::ServiceSettings;
use scim_operator::server;
use tokio::sync::watch;
use tracing::info;

/// Provision users and groups into Kubernetes over SCIM 2.0 and turn them into access.
#[derive(Parser)]
#[command(name = "scim-operator", version, about)]
struct Cli {
    /// Log format.
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
    /// Serve SCIM without a cluster: objects are YAML files under --data, and the bindings
    /// the policies in <data>/policies imply are written under <data>/output.
    Local {
        /// Address to listen on.
        #[arg(long, env = "SCIM_OPERATOR_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Folder for the data, the policies and the output.
        #[arg(long, env = "SCIM_OPERATOR_DATA")]
        data: PathBuf,
        /// Tenant (namespace) the token writes into.
        #[arg(long, env = "SCIM_OPERATOR_TENANT", default_value = "default")]
        tenant: String,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Serve SCIM and run the controller against the cluster in KUBECONFIG (or in-cluster).
    Run {
        /// Address to listen on.
        #[arg(long, env = "SCIM_OPERATOR_LISTEN", default_value = "0.0.0.0:8080")]
        listen: SocketAddr,
        /// Namespace (tenant) that holds the ScimUsers and ScimGroups of this connection.
        #[arg(long, env = "SCIM_OPERATOR_NAMESPACE")]
        namespace: String,
        /// Serve SCIM only; do not run the controller.
        #[arg(long, env = "SCIM_OPERATOR_NO_CONTROLLER")]
        no_controller: bool,
        #[command(flatten)]
        common: CommonArgs,
    },
}

#[derive(Args)]
struct CommonArgs {
    /// Bearer token the IdP sends. Generated and printed once when unset.
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
}

impl CommonArgs {
    fn controller_settings(&self) -> ControllerSettings {
        ControllerSettings {
            user_prefix: self.user_prefix.clone(),
            group_prefix: self.group_prefix.clone(),
            allowed_roles: self.allowed_roles.clone(),
        }
    }

    /// The token from the environment, or a new one printed once to stderr.
    fn token(&self) -> String {
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

/// Resolves on Ctrl-C or SIGTERM, and tells every watcher of the returned channel.
fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            if let Ok(mut s) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            {
                s.recv().await;
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {},
            _ = term => {},
        }
        info!("shutting down");
        let _ = tx.send(true);
    });
    rx
}

async fn wait_for(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds => {
            print!("{}", crds_yaml().context("failed to render the CRDs")?);
            Ok(())
        }
        Command::Local {
            listen,
            data,
            tenant,
            common,
        } => {
            init_telemetry(cli.log_format);
            let auth = Arc::new(Authenticator::single(&common.token(), &tenant));
            let store = server::open_embedded(&data.join("store"))
                .context("failed to open the data folder")?;
            let stop = shutdown_signal();
            let local = controller::local::run_local(
                data.clone(),
                store.clone(),
                server::store_changes(&store),
                common.controller_settings(),
                wait_for(stop.clone()),
            );
            let settings = ServiceSettings {
                max_page_size: common.max_page_size,
            };
            let state = server::app_state(store, auth, common.public_url.clone(), settings);
            let serving = server::serve(listen, state, wait_for(stop));
            let (served, reconciled) = tokio::join!(serving, local);
            served.context("the SCIM server failed")?;
            reconciled.context("the controller failed")?;
            Ok(())
        }
        Command::Run {
            listen,
            namespace,
            no_controller,
            common,
        } => {
            init_telemetry(cli.log_format);
            let auth = Arc::new(Authenticator::single(&common.token(), &namespace));
            let client = kube::Client::try_default()
                .await
                .context("failed to load a kubeconfig or in-cluster configuration")?;
            let store = server::open_kube(client.clone(), Some(&namespace)).await;
            let stop = shutdown_signal();
            let settings = ServiceSettings {
                max_page_size: common.max_page_size,
            };
            let state = server::app_state(store, auth, common.public_url.clone(), settings);
            let serving = server::serve(listen, state, wait_for(stop.clone()));
            if no_controller {
                serving.await.context("the SCIM server failed")?;
                return Ok(());
            }
            let reconciling =
                controller::kube::run(client, common.controller_settings(), wait_for(stop));
            let (served, reconciled) = tokio::join!(serving, reconciling);
            served.context("the SCIM server failed")?;
            reconciled.context("the controller failed")?;
            Ok(())
        }
    }
}
