//! What the invoker runs and how: [`ActionSpec`] (one action, its limits and init parameters)
//! and [`InvokerConfig`] (invoker-wide settings). Every default is in `ActionSpec::new` and
//! `InvokerConfig::new`.

use std::path::PathBuf;
use std::time::Duration;

use whisk_grouping::ActionName;

use crate::error::{Error, Result};

/// One deployable action.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionSpec {
    /// Fully qualified name without a leading slash: `namespace/action` or `namespace/pkg/action`.
    pub name: String,
    /// The executable (`exec` of the zip).
    pub exec: PathBuf,
    /// Defaults to `0.0.1`.
    pub version: String,
    /// Memory limit in MB; defaults to 256.
    pub memory_mb: u32,
    /// Action time limit; defaults to 60 s.
    pub timeout: Duration,
    /// Most containers of this action alive at once; defaults to 4.
    pub max_containers: usize,
    /// Init parameters, passed as environment variables.
    pub init_params: Vec<(String, String)>,
}

impl ActionSpec {
    /// A spec with OpenWhisk's defaults. `name` may start with `/`; it is stored without it.
    pub fn new(name: &str, exec: impl Into<PathBuf>) -> Self {
        Self {
            name: name.trim_start_matches('/').to_string(),
            exec: exec.into(),
            version: "0.0.1".into(),
            memory_mb: 256,
            timeout: Duration::from_secs(60),
            max_containers: 4,
            init_params: Vec::new(),
        }
    }

    /// Sets the time limit.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the most containers alive at once (at least 1).
    #[must_use]
    pub fn with_max_containers(mut self, n: usize) -> Self {
        self.max_containers = n.max(1);
        self
    }

    /// Sets the memory limit: reported in events and, where the emulator can use cgroups, the
    /// container's memory limit (`docker run --memory`).
    #[must_use]
    pub fn with_memory_mb(mut self, mb: u32) -> Self {
        self.memory_mb = mb;
        self
    }

    /// Adds an init parameter (an environment variable of every container).
    #[must_use]
    pub fn with_init_param(mut self, key: &str, value: &str) -> Self {
        self.init_params.push((key.to_string(), value.to_string()));
        self
    }

    /// The namespace: the first segment of the name (`ActionName::parse`).
    pub fn namespace(&self) -> &str {
        ActionName::parse(&self.name).map_or("", |n| n.namespace())
    }

    /// The action's own name, the last segment (the `name` of the invoker's `/init`).
    pub fn short_name(&self) -> &str {
        self.name.rsplit('/').next().unwrap_or(&self.name)
    }

    pub(crate) fn validate(&mut self) -> Result<()> {
        let qualified = ActionName::parse(&self.name)
            .is_some_and(|n| !n.action().split('/').any(str::is_empty));
        if !qualified {
            return Err(Error::InvalidSpec(format!(
                "action name {:?} must be namespace/action or namespace/package/action",
                self.name
            )));
        }
        if !self.exec.is_file() {
            return Err(Error::MissingExecutable {
                path: self.exec.clone(),
            });
        }
        // The child runs with an empty environment and its own working directory.
        self.exec = self.exec.canonicalize().map_err(|source| Error::Io {
            what: format!("resolving {}", self.exec.display()),
            source,
        })?;
        Ok(())
    }
}

/// Invoker-wide settings. `InvokerConfig::new()` holds every default.
#[derive(Debug, Clone, PartialEq)]
pub struct InvokerConfig {
    /// `N` of the events' `source` (`invoker<N>`). Defaults to 0.
    pub invoker_id: u32,
    /// `N` of the Metric events' `source` (`controller<N>`). Defaults to 0.
    pub controller_id: u32,
    /// Idle time before a container is frozen. Defaults to 50 ms.
    pub pause_grace: Duration,
    /// Idle time before a container is removed. Defaults to 10 minutes.
    pub idle_timeout: Duration,
    /// In-flight activations allowed per namespace. Defaults to 100.
    pub namespace_concurrency: usize,
    /// Longest a request waits for a container before failing as a whisk error. Defaults to 60 s.
    pub queue_timeout: Duration,
    /// Emit a `ConcurrentInvocations` Metric event (value: the namespace's in-flight count,
    /// this one included) for every accepted activation, as the controller's old load balancer
    /// does. Defaults to true.
    pub concurrent_invocations_events: bool,
    /// Runtime kind in the events. Defaults to `rust:1.34`.
    pub kind: String,
    /// When set, every container gets `WHISK_METRICS_PUSHGATEWAY_URL`. Defaults to unset.
    pub pushgateway_url: Option<String>,
    /// When set, passed as `api_key`/`__OW_API_KEY`. Defaults to unset.
    pub api_key: Option<String>,
    /// Per-namespace API keys (namespace, `uuid:key`), as the invoker hands each activation its
    /// namespace's key; they take precedence over `api_key`. Defaults to none.
    pub api_keys: Vec<(String, String)>,
    /// When set, every container's `__OW_API_HOST` (the invoker's `docker run -e`). Defaults to
    /// unset.
    pub api_host: Option<String>,
    /// Run the proxy as with `OW_WAIT_FOR_ACK`: the child gets `__OW_WAIT_FOR_ACK` and must
    /// write `{"ok":true}` on fd 3 at start. Defaults to false (the rust:1.34 image's proxy).
    pub wait_for_ack: bool,
    /// Run each container in its own cgroup with the action's memory limit, where the
    /// emulator's own cgroup allows it (falls back to plain processes, said once). Defaults to
    /// true.
    pub cgroups: bool,
    /// Extra init parameters for every action. Defaults to none.
    pub init_params: Vec<(String, String)>,
}

impl Default for InvokerConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl InvokerConfig {
    /// The defaults.
    pub fn new() -> Self {
        Self {
            invoker_id: 0,
            controller_id: 0,
            pause_grace: Duration::from_millis(50),
            idle_timeout: Duration::from_secs(600),
            namespace_concurrency: 100,
            queue_timeout: Duration::from_secs(60),
            concurrent_invocations_events: true,
            kind: "rust:1.34".into(),
            pushgateway_url: None,
            api_key: None,
            api_keys: Vec::new(),
            api_host: None,
            wait_for_ack: false,
            cgroups: true,
            init_params: Vec::new(),
        }
    }

    /// Sets the pause grace.
    #[must_use]
    pub fn with_pause_grace(mut self, d: Duration) -> Self {
        self.pause_grace = d;
        self
    }

    /// Sets the idle timeout.
    #[must_use]
    pub fn with_idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = d;
        self
    }

    /// Sets the namespace concurrency limit (at least 1).
    #[must_use]
    pub fn with_namespace_concurrency(mut self, n: usize) -> Self {
        self.namespace_concurrency = n.max(1);
        self
    }

    /// Sets the queue timeout.
    #[must_use]
    pub fn with_queue_timeout(mut self, d: Duration) -> Self {
        self.queue_timeout = d;
        self
    }

    /// Turns the `ConcurrentInvocations` events on or off.
    #[must_use]
    pub fn with_concurrent_invocations_events(mut self, on: bool) -> Self {
        self.concurrent_invocations_events = on;
        self
    }

    /// Sets the Pushgateway URL given to every container.
    #[must_use]
    pub fn with_pushgateway_url(mut self, url: &str) -> Self {
        self.pushgateway_url = Some(url.to_string());
        self
    }

    /// Sets the invoker id.
    #[must_use]
    pub fn with_invoker_id(mut self, id: u32) -> Self {
        self.invoker_id = id;
        self
    }

    /// Sets the runtime kind.
    #[must_use]
    pub fn with_kind(mut self, kind: &str) -> Self {
        self.kind = kind.to_string();
        self
    }

    /// Gives the activations of `namespace` the API key `key` (`uuid:key`) as `api_key` and
    /// `__OW_API_KEY` (see [`crate::controller`] for the controller that knows it).
    #[must_use]
    pub fn with_api_key(mut self, namespace: &str, key: &str) -> Self {
        self.api_keys.retain(|(ns, _)| ns != namespace);
        self.api_keys.push((namespace.to_string(), key.to_string()));
        self
    }

    /// The API key of `namespace`'s activations: its own, else `api_key`.
    pub fn api_key_for(&self, namespace: &str) -> Option<String> {
        self.api_keys
            .iter()
            .find(|(ns, _)| ns == namespace)
            .map(|(_, k)| k.clone())
            .or_else(|| self.api_key.clone())
    }

    /// Sets `__OW_API_HOST` of every container.
    #[must_use]
    pub fn with_api_host(mut self, host: &str) -> Self {
        self.api_host = Some(host.to_string());
        self
    }

    /// Turns `OW_WAIT_FOR_ACK` on or off.
    #[must_use]
    pub fn with_wait_for_ack(mut self, on: bool) -> Self {
        self.wait_for_ack = on;
        self
    }

    /// Turns the per-container cgroups on or off.
    #[must_use]
    pub fn with_cgroups(mut self, on: bool) -> Self {
        self.cgroups = on;
        self
    }

    /// Adds an init parameter given to every action.
    #[must_use]
    pub fn with_init_param(mut self, key: &str, value: &str) -> Self {
        self.init_params.push((key.to_string(), value.to_string()));
        self
    }
}
