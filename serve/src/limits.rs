//! The listener's settings: their defaults (the one place they are written), and the flags
//! that set them, under the environment prefix of the binary that flattens them.

use std::marker::PhantomData;
use std::time::Duration;

use clap::{Arg, ArgMatches, Command};
use whisk_grouping::parse_duration_nonzero;

/// How long a connection may take for each part of a request, and how many may be open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A request head must be complete this long after its first byte; a new connection's
    /// first head this long after the accept (one that sends nothing is closed then).
    pub head_timeout: Duration,
    /// A kept-alive connection with no request started is closed after this long.
    pub idle_timeout: Duration,
    /// A request's whole body must arrive this long after its head (however it trickles).
    pub body_timeout: Duration,
    /// Most connections open at once, over every peer.
    pub max_connections: usize,
    /// Most connections open at once from one peer address.
    pub max_connections_per_peer: usize,
}

impl Default for Limits {
    /// The defaults (docs/design.md, "Listeners"). An SDK container sends its head at once and
    /// holds one kept-alive connection; the containers of one invoker may share one address
    /// after NAT (an invoker with 64 GiB for actions of 128 MiB runs 512), so a peer's limit is
    /// twice that; the global limit keeps a replica within its 128 MiB pod (a connection waiting
    /// for a head costs ~23 KiB: 4 096 are ~90 MiB); the idle timeout is shorter than the SDK's
    /// 600 s pool age, whose retry on a fresh connection covers a connection closed meanwhile.
    fn default() -> Self {
        Self {
            head_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            body_timeout: Duration::from_secs(10),
            max_connections: 4096,
            max_connections_per_peer: 1024,
        }
    }
}

/// The environment prefix of a binary's flags, e.g. `WHISK_GATEWAY_`.
pub trait EnvPrefix {
    /// The prefix, with its trailing `_`.
    const PREFIX: &'static str;
}

/// The listener's flags, to `#[command(flatten)]` into a binary's configuration; `P` names
/// their environment variables (`<P::PREFIX>HEAD_TIMEOUT`, …).
pub struct ListenerFlags<P> {
    /// The settings read.
    pub limits: Limits,
    env: PhantomData<fn() -> P>,
}

impl<P> ListenerFlags<P> {
    /// Flags holding `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            env: PhantomData,
        }
    }
}

impl<P> Clone for ListenerFlags<P> {
    fn clone(&self) -> Self {
        Self::new(self.limits)
    }
}

impl<P> std::fmt::Debug for ListenerFlags<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.limits.fmt(f)
    }
}

const HEAD: &str = "head-timeout";
const IDLE: &str = "idle-timeout";
const BODY: &str = "body-timeout";
const MAX: &str = "max-connections";
const PER_PEER: &str = "max-connections-per-peer";

impl<P: EnvPrefix> clap::Args for ListenerFlags<P> {
    fn augment_args(cmd: Command) -> Command {
        let d = Limits::default();
        let duration = |name: &'static str, default: Duration, help: &'static str| {
            flag::<P>(name, format!("{}s", default.as_secs()), help)
                .value_name("DURATION")
                .value_parser(parse_duration_nonzero)
        };
        let count = |name: &'static str, default: usize, help: &'static str| {
            flag::<P>(name, default.to_string(), help)
                .value_name("N")
                .value_parser(parse_positive)
        };
        cmd.arg(duration(
            HEAD,
            d.head_timeout,
            "Time a request head may take from its first byte (a new connection's first head: \
             from the accept, so one that sends nothing is closed after it)",
        ))
        .arg(duration(
            IDLE,
            d.idle_timeout,
            "Time a kept-alive connection may stay open with no request begun",
        ))
        .arg(duration(
            BODY,
            d.body_timeout,
            "Time a request's whole body may take after its head, however slowly it trickles \
             (then 408)",
        ))
        .arg(count(
            MAX,
            d.max_connections,
            "Most connections open at once; a new one past it first closes the oldest that has \
             not sent a complete head, of the address holding the most, else it is refused",
        ))
        .arg(count(
            PER_PEER,
            d.max_connections_per_peer,
            "Most connections open at once from one peer address (all containers of an invoker \
             behind NAT share one); past it the peer's oldest connection without a complete head \
             is closed first, else the new one is refused",
        ))
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl<P: EnvPrefix> clap::FromArgMatches for ListenerFlags<P> {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let d = Limits::default();
        let duration =
            |name: &str, default| m.get_one::<Duration>(name).copied().unwrap_or(default);
        let count = |name: &str, default| m.get_one::<usize>(name).copied().unwrap_or(default);
        Ok(Self::new(Limits {
            head_timeout: duration(HEAD, d.head_timeout),
            idle_timeout: duration(IDLE, d.idle_timeout),
            body_timeout: duration(BODY, d.body_timeout),
            max_connections: count(MAX, d.max_connections),
            max_connections_per_peer: count(PER_PEER, d.max_connections_per_peer),
        }))
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

/// `--name` with the environment variable `<PREFIX>NAME` and a default.
fn flag<P: EnvPrefix>(name: &'static str, default: String, help: &'static str) -> Arg {
    let env = format!(
        "{}{}",
        P::PREFIX,
        name.to_ascii_uppercase().replace('-', "_")
    );
    Arg::new(name)
        .long(name)
        .env(env)
        .default_value(default)
        .help(help)
}

fn parse_positive(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err(format!("{s:?}: must be at least 1")),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a positive whole number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    struct Test;
    impl EnvPrefix for Test {
        const PREFIX: &'static str = "WHISK_SERVE_TEST_";
    }

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        listener: ListenerFlags<Test>,
    }

    #[test]
    fn flags_default_to_the_limits_defaults_and_parse_durations_and_counts() {
        let cli = Cli::try_parse_from(["x"]).unwrap();
        assert_eq!(cli.listener.limits, Limits::default());
        let cli = Cli::try_parse_from([
            "x",
            "--head-timeout",
            "2s",
            "--idle-timeout",
            "1m",
            "--body-timeout",
            "500ms",
            "--max-connections",
            "7",
            "--max-connections-per-peer",
            "3",
        ])
        .unwrap();
        let l = cli.listener.limits;
        assert_eq!(l.head_timeout, Duration::from_secs(2));
        assert_eq!(l.idle_timeout, Duration::from_secs(60));
        assert_eq!(l.body_timeout, Duration::from_millis(500));
        assert_eq!((l.max_connections, l.max_connections_per_peer), (7, 3));
    }

    #[test]
    fn zero_is_refused_naming_the_flag_and_help_names_the_environment_variables() {
        for (flag, value) in [
            ("--max-connections-per-peer", "0"),
            ("--head-timeout", "0s"),
        ] {
            let err = Cli::try_parse_from(["x", flag, value]).err().unwrap();
            assert!(err.to_string().contains(flag), "{err}");
        }
        let help = Cli::command().render_long_help().to_string();
        for env in [
            "WHISK_SERVE_TEST_HEAD_TIMEOUT",
            "WHISK_SERVE_TEST_MAX_CONNECTIONS_PER_PEER",
        ] {
            assert!(help.contains(env), "{help}");
        }
    }
}
