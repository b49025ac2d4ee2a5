//! The cluster and namespace a command acts on, chosen the way kubectl chooses them:
//! `--kubeconfig`, else `$KUBECONFIG`, else `~/.kube/config`, else the in-cluster account;
//! `--context`, else the current context; `-n`, else the context's namespace, else "default".

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use super::{GlobalArgs, PluginError};
use crate::api::SchemaMigration;

pub struct Target {
    pub client: Client,
    pub namespace: String,
}

impl Target {
    pub async fn connect(global: &GlobalArgs) -> Result<Target, PluginError> {
        let options = KubeConfigOptions {
            context: global.context.clone(),
            cluster: None,
            user: None,
        };
        let config = match (&global.kubeconfig, &global.context) {
            (Some(path), _) => {
                let file = Kubeconfig::read_from(path).map_err(|e| {
                    PluginError::Kubeconfig(format!(
                        "cannot read kubeconfig {}: {e}",
                        path.display()
                    ))
                })?;
                Config::from_custom_kubeconfig(file, &options)
                    .await
                    .map_err(|e| load_error(&e))?
            }
            (None, Some(_)) => Config::from_kubeconfig(&options)
                .await
                .map_err(|e| load_error(&e))?,
            (None, None) => Config::infer().await.map_err(|e| load_error(&e))?,
        };
        let namespace = global
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config).map_err(|e| {
            PluginError::Kubeconfig(format!("cannot make a client from the kubeconfig: {e}"))
        })?;
        Ok(Target { client, namespace })
    }

    pub fn migrations(&self) -> Api<SchemaMigration> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The SchemaMigration, or a NotFound that says how to list them.
    pub async fn migration(&self, name: &str) -> Result<SchemaMigration, PluginError> {
        match self.migrations().get_opt(name).await {
            Ok(Some(smig)) => Ok(smig),
            Ok(None) => Err(PluginError::NotFound {
                namespace: self.namespace.clone(),
                name: name.to_string(),
            }),
            Err(e) => Err(PluginError::api(
                format!("cannot read schemamigration {name} in {}", self.namespace),
                e,
            )),
        }
    }
}

fn load_error(e: &dyn std::fmt::Display) -> PluginError {
    PluginError::Kubeconfig(format!(
        "cannot load the kubeconfig: {e} (pass --kubeconfig FILE or set KUBECONFIG; --context NAME picks a context)"
    ))
}
