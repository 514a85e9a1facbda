//! Node configuration: command-line flags, `KRIMINODB_*` environment
//! variables and an optional TOML file, in that order of precedence.
//!
//! This module only parses and validates; it never starts anything.

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser};

use crate::crypto::{KeyError, Keyring};
use crate::store::Policy;

/// Redis's default `proto-max-bulk-len`: the largest single argument accepted.
pub const DEFAULT_PROTO_MAX_BULK_LEN: u64 = 512 * 1024 * 1024;
/// Redis's default `client-query-buffer-limit`.
pub const DEFAULT_QUERY_BUFFER_LIMIT: u64 = 1024 * 1024 * 1024;
/// Default hard output-buffer limit: Redis has none for normal clients,
/// which lets one client that never reads its replies exhaust memory.
pub const DEFAULT_OUTPUT_BUFFER_LIMIT: u64 = 256 * 1024 * 1024;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "kriminodb",
    version,
    about = "An in-memory key-value store that speaks the Redis protocol and runs as a leaderless cluster.",
    args_override_self = true
)]
pub struct Config {
    /// TOML file with any of these settings (keys as the long flag names,
    /// e.g. `port = 3001`). Flags and environment variables override it.
    #[arg(long, env = "KRIMINODB_CONFIG")]
    pub config: Option<PathBuf>,

    /// Address to listen on for clients and peers.
    #[arg(long, env = "KRIMINODB_BIND", default_value = "127.0.0.1")]
    pub bind: IpAddr,

    /// Client (Redis protocol) port; 0 picks a free port.
    #[arg(long, env = "KRIMINODB_PORT", default_value_t = 3000)]
    pub port: u16,

    /// Peer port: UDP for membership, TCP for replication.
    #[arg(long, env = "KRIMINODB_PEER_PORT", default_value_t = 4000)]
    pub peer_port: u16,

    /// Human-readable node name; defaults to `<bind>:<port>`.
    #[arg(long, env = "KRIMINODB_NAME")]
    pub name: Option<String>,

    /// Seed peers to join, as HOST:PORT[,HOST:PORT...] (their peer ports).
    /// Without it the node is a one-node cluster that others may join.
    #[arg(long, env = "KRIMINODB_JOIN", value_delimiter = ',')]
    pub join: Vec<String>,

    /// Address peers use to reach this node, when --bind is a wildcard.
    #[arg(long, env = "KRIMINODB_ADVERTISE_ADDR")]
    pub advertise_addr: Option<IpAddr>,

    /// SWIM: how often each node probes one member.
    #[arg(long, env = "KRIMINODB_PROBE_PERIOD", default_value = "600ms", value_parser = humantime::parse_duration)]
    pub probe_period: Duration,

    /// SWIM: how long a direct probe waits before asking others to probe.
    #[arg(long, env = "KRIMINODB_PROBE_RTT", default_value = "300ms", value_parser = humantime::parse_duration)]
    pub probe_rtt: Duration,

    /// SWIM: members asked to probe indirectly when a direct probe fails.
    #[arg(long, env = "KRIMINODB_INDIRECT_PROBES", default_value_t = 3)]
    pub indirect_probes: usize,

    /// SWIM: how long a member stays suspect before it is declared down
    /// (multiplied by log10 of the cluster size above 10 members).
    #[arg(long, env = "KRIMINODB_SUSPECT_TIMEOUT", default_value = "2400ms", value_parser = humantime::parse_duration)]
    pub suspect_timeout: Duration,

    /// SWIM: how often membership updates are gossiped to a few members.
    #[arg(long, env = "KRIMINODB_GOSSIP_INTERVAL", default_value = "200ms", value_parser = humantime::parse_duration)]
    pub gossip_interval: Duration,

    /// Anti-entropy: how often this node reconciles with the next peer.
    #[arg(long, env = "KRIMINODB_SYNC_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    pub sync_interval: Duration,

    /// A node unreachable for longer is forgotten: tombstones it has not
    /// seen may be collected, and if it comes back it discards its data and
    /// pulls everything.
    #[arg(long, env = "KRIMINODB_FORGET_AFTER", default_value = "1h", value_parser = humantime::parse_duration)]
    pub forget_after: Duration,

    /// How long a down member stays listed before it is removed.
    #[arg(long, env = "KRIMINODB_REMOVE_DOWN_AFTER", default_value = "20s", value_parser = humantime::parse_duration)]
    pub remove_down_after: Duration,

    /// Log filter: error, warn, info, debug, trace, or a tracing directive.
    #[arg(long, env = "KRIMINODB_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Maximum number of simultaneous client connections.
    #[arg(long, env = "KRIMINODB_MAXCLIENTS", default_value_t = 10000)]
    pub maxclients: usize,

    /// Maximum number of simultaneous inbound links on the peer port (TCP);
    /// connections beyond it are closed at once and counted (INFO
    /// replication `rejected_peer_links`). Each peer holds one link to
    /// every other node, so the default leaves room for a large cluster
    /// and its reconnections while bounding what strangers can open.
    #[arg(long, env = "KRIMINODB_MAX_PEER_LINKS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_peer_links: u32,

    /// Largest single bulk argument a client may send, in bytes.
    #[arg(long, env = "KRIMINODB_PROTO_MAX_BULK_LEN", default_value_t = DEFAULT_PROTO_MAX_BULK_LEN)]
    pub proto_max_bulk_len: u64,

    /// Largest unparsed input buffered for one client, in bytes.
    #[arg(long, env = "KRIMINODB_CLIENT_QUERY_BUFFER_LIMIT", default_value_t = DEFAULT_QUERY_BUFFER_LIMIT)]
    pub client_query_buffer_limit: u64,

    /// Secret shared by the cluster (at least 16 bytes; use a random one,
    /// e.g. `openssl rand -base64 32`). When set, every membership datagram
    /// and every replication frame is encrypted and authenticated with a
    /// key derived from it; nodes without it can neither join, read nor
    /// inject anything. This key sends; it and the secondary are accepted.
    #[arg(
        long,
        env = "KRIMINODB_CLUSTER_KEY",
        hide_env_values = true,
        conflicts_with = "cluster_key_file"
    )]
    pub cluster_key: Option<Secret>,

    /// File holding the cluster key (one trailing newline is ignored).
    #[arg(long, env = "KRIMINODB_CLUSTER_KEY_FILE")]
    pub cluster_key_file: Option<PathBuf>,

    /// Second cluster key, accepted from peers but never used to send: for
    /// rotating the key without downtime (see README).
    #[arg(
        long,
        env = "KRIMINODB_CLUSTER_KEY_SECONDARY",
        hide_env_values = true,
        conflicts_with = "cluster_key_secondary_file"
    )]
    pub cluster_key_secondary: Option<Secret>,

    /// File holding the secondary cluster key.
    #[arg(long, env = "KRIMINODB_CLUSTER_KEY_SECONDARY_FILE")]
    pub cluster_key_secondary_file: Option<PathBuf>,

    /// Memory limit in bytes, or with a unit as Redis takes them (`100mb`,
    /// `1gb`; `k`/`m`/`g` are powers of 1000, `kb`/`mb`/`gb` of 1024); 0
    /// means no limit. Measured as INFO `used_memory` (jemalloc's allocated
    /// bytes), refreshed every few milliseconds, so it is approximate.
    #[arg(long, env = "KRIMINODB_MAXMEMORY", default_value = "0", value_parser = parse_memory)]
    pub maxmemory: u64,

    /// What happens past --maxmemory: `noeviction` refuses writes that may
    /// grow memory with -OOM; the others evict sampled keys: the least
    /// recently used (`allkeys-lru`, `volatile-lru`), random ones
    /// (`allkeys-random`, `volatile-random`) or the one expiring first
    /// (`volatile-ttl`); `volatile-*` only consider keys with a TTL.
    #[arg(long, env = "KRIMINODB_MAXMEMORY_POLICY", value_parser = policy_parser(), default_value = "noeviction")]
    pub maxmemory_policy: Policy,

    /// Keys sampled per eviction (Redis's maxmemory-samples): more is
    /// closer to exact LRU/TTL order and slower.
    #[arg(long, env = "KRIMINODB_MAXMEMORY_SAMPLES", default_value_t = crate::store::evict::DEFAULT_SAMPLES, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub maxmemory_samples: u32,

    /// Password clients must give with AUTH (or HELLO AUTH) before any
    /// other command, as Redis's `requirepass`. Prefer the environment
    /// variable or the config file: flags show in the process list.
    #[arg(long, env = "KRIMINODB_REQUIREPASS", hide_env_values = true)]
    pub requirepass: Option<Password>,

    /// Without a password, refuse clients that do not connect from a
    /// loopback address (yes/no), as Redis's `protected-mode`.
    #[arg(long, env = "KRIMINODB_PROTECTED_MODE", default_value = "yes", value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::Set, hide_possible_values = true)]
    pub protected_mode: bool,

    /// Close a client idle (nothing read, no reply written) for this many
    /// seconds; clients blocked in WAIT are never idle. 0 never closes one.
    #[arg(long, env = "KRIMINODB_TIMEOUT", default_value_t = 0)]
    pub timeout: u64,

    /// Most bytes of replies queued for one client that has not read them;
    /// past it (checked before each command and each value, so within one
    /// MGET or EXEC too) the client is disconnected (Redis's hard
    /// `client-output-buffer-limit`). 0 means no limit.
    #[arg(long, env = "KRIMINODB_CLIENT_OUTPUT_BUFFER_LIMIT", default_value_t = DEFAULT_OUTPUT_BUFFER_LIMIT)]
    pub client_output_buffer_limit: u64,

    /// TLS client port (0 picks a free port). With it set, `--port 0`
    /// disables the plain-text port, as in Redis.
    #[arg(long, env = "KRIMINODB_TLS_PORT", requires_all = ["tls_cert_file", "tls_key_file"])]
    pub tls_port: Option<u16>,

    /// PEM certificate chain the TLS port presents.
    #[arg(long, env = "KRIMINODB_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM private key of --tls-cert-file.
    #[arg(long, env = "KRIMINODB_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,

    /// PEM CA certificates: when set, TLS clients must present a
    /// certificate signed by one of them.
    #[arg(long, env = "KRIMINODB_TLS_CA_CERT_FILE")]
    pub tls_ca_cert_file: Option<PathBuf>,

    /// TEST ONLY: skews this node's wall clock by this many milliseconds
    /// (may be negative), for fault tests of clock skew on one machine.
    #[arg(
        long,
        env = "KRIMINODB_CLOCK_OFFSET_MS",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub clock_offset_ms: i64,

    /// Threads that serve clients and peers; 1 runs everything on one
    /// thread (as Redis); 0 picks one thread up to 2 cores, one per core
    /// above.
    #[arg(long, env = "KRIMINODB_THREADS", default_value_t = 0)]
    pub threads: usize,
}

/// `--maxmemory-policy` by Redis's names (listed in `--help`), parsed by
/// the store's own [`Policy::parse`], so the store need not know clap.
fn policy_parser() -> impl clap::builder::TypedValueParser<Value = Policy> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(Policy::NAMES)
        .map(|name| Policy::parse(name.as_bytes()).unwrap_or_default())
}

/// A secret from the command line, environment or config file; never
/// shown by `Debug`, so it cannot end up in a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

/// A password setting. Its `Debug` form hides it, so logging a `Config`
/// cannot leak it; an empty one is refused (more likely an unset variable
/// than a choice). Parsed with `FromStr` only: clap would prefer a
/// `From<&str>` and skip the check.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<hidden>)")
    }
}

impl std::str::FromStr for Password {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err("an empty password is not allowed; leave the setting out for none".into());
        }
        Ok(Self(s.to_string()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error(transparent)]
    Cli(#[from] clap::Error),
}

impl Default for Config {
    /// The defaults `kriminodb --help` documents, ignoring the environment.
    fn default() -> Self {
        let matches = Self::command_without_env().get_matches_from(["kriminodb"]);
        Self::from_arg_matches(&matches).expect("built-in defaults always parse")
    }
}

impl Config {
    /// Defaults with OS-assigned ports, for tests that start nodes in-process.
    pub fn ephemeral() -> Self {
        Self {
            port: 0,
            peer_port: 0,
            ..Self::default()
        }
    }

    /// Parses the process's arguments, environment and config file.
    pub fn from_env_and_args() -> Result<Self, ConfigError> {
        Self::parse_from_args(std::env::args_os())
    }

    /// Parses `args` (including the program name) plus the environment and
    /// the config file named by `--config` / `KRIMINODB_CONFIG`.
    pub fn parse_from_args<I, T>(args: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let first = Self::try_parse_from(&args)?;
        let Some(path) = first.config.clone() else {
            return Ok(first);
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let file_args = file_to_args(&path, &text)?;
        // File settings go before the real arguments so flags override them
        // (`args_override_self`), and settings present in the environment are
        // left out so the environment overrides the file too.
        let mut merged = Vec::with_capacity(args.len() + file_args.len());
        merged.push(args.first().cloned().unwrap_or_else(|| "kriminodb".into()));
        merged.extend(file_args);
        merged.extend(args.into_iter().skip(1));
        Ok(Self::try_parse_from(merged)?)
    }

    fn command_without_env() -> clap::Command {
        let mut cmd = Self::command();
        let ids: Vec<_> = cmd.get_arguments().map(|a| a.get_id().clone()).collect();
        for id in ids {
            cmd = cmd.mut_arg(id, |a| a.env(None::<&str>));
        }
        cmd
    }

    /// The node's name as shown to clients and peers.
    /// The keyring this configuration asks for, None without a cluster key. A key
    /// file's content is the secret, less one trailing newline.
    pub fn keyring(&self) -> Result<Option<Keyring>, KeyError> {
        let config = self;
        let read = |path: &PathBuf| -> Result<Vec<u8>, KeyError> {
            let mut bytes = std::fs::read(path).map_err(|source| KeyError::Read {
                path: path.clone(),
                source,
            })?;
            if bytes.last() == Some(&b'\n') {
                bytes.pop();
                if bytes.last() == Some(&b'\r') {
                    bytes.pop();
                }
            }
            Ok(bytes)
        };
        let primary = match (&config.cluster_key, &config.cluster_key_file) {
            (Some(secret), _) => Some(secret.expose().to_vec()),
            (None, Some(path)) => Some(read(path)?),
            (None, None) => None,
        };
        let secondary = match (
            &config.cluster_key_secondary,
            &config.cluster_key_secondary_file,
        ) {
            (Some(secret), _) => Some(secret.expose().to_vec()),
            (None, Some(path)) => Some(read(path)?),
            (None, None) => None,
        };
        match (primary, secondary) {
            (Some(p), s) => Keyring::new(&p, s.as_deref()).map(Some),
            (None, Some(_)) => Err(KeyError::SecondaryWithoutPrimary),
            (None, None) => Ok(None),
        }
    }

    /// Whether this configuration names a cluster key (without reading any file).
    pub fn has_cluster_key(&self) -> bool {
        self.cluster_key.is_some() || self.cluster_key_file.is_some()
    }

    pub fn node_name(&self, port: u16) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("{}:{}", self.bind, port))
    }
}

/// A memory size as Redis's config takes it: bytes, or a number with `k`,
/// `m`, `g` (powers of 1000) or `kb`, `mb`, `gb` (powers of 1024), in any
/// case.
pub fn parse_memory(text: &str) -> Result<u64, String> {
    let lower = text.trim().to_ascii_lowercase();
    let split = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (digits, unit) = lower.split_at(split);
    let unit: u64 = match unit {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1024,
        "m" => 1000 * 1000,
        "mb" => 1024 * 1024,
        "g" => 1000 * 1000 * 1000,
        "gb" => 1024 * 1024 * 1024,
        _ => return Err(format!("'{text}' is not a memory size (e.g. 100mb, 1gb)")),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| format!("'{text}' is not a memory size (e.g. 100mb, 1gb)"))
}

/// Turns `key = value` lines of the TOML file into `--key value` arguments,
/// rejecting unknown keys so a typo does not go unnoticed.
fn file_to_args(path: &std::path::Path, text: &str) -> Result<Vec<OsString>, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let table: toml::Table = text.parse().map_err(|e| invalid(format!("{e}")))?;
    let cmd = Config::command();
    let mut out = Vec::new();
    for (key, value) in table {
        let long = key.replace('_', "-");
        let Some(arg) = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()))
        else {
            return Err(invalid(format!("unknown setting '{key}'")));
        };
        if long == "config" {
            return Err(invalid("'config' cannot be set from a config file".into()));
        }
        if let Some(env) = arg.get_env()
            && std::env::var_os(env).is_some()
        {
            continue;
        }
        let values: Vec<String> = match value {
            toml::Value::String(s) => vec![s],
            toml::Value::Integer(i) => vec![i.to_string()],
            toml::Value::Boolean(b) => vec![b.to_string()],
            toml::Value::Float(f) => vec![f.to_string()],
            toml::Value::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    toml::Value::String(s) => Ok(s),
                    other => Ok(other.to_string()),
                })
                .collect::<Result<_, ConfigError>>()?,
            other => return Err(invalid(format!("unsupported value for '{key}': {other}"))),
        };
        if values.is_empty() {
            continue;
        }
        out.push(OsString::from(format!("--{long}")));
        out.push(OsString::from(values.join(",")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let s: Secret = "super secret value".parse().unwrap();
        assert!(!format!("{s:?}").contains("super"));
    }

    #[test]
    fn defaults_match_the_documented_ports() {
        let c = Config::default();
        assert_eq!(c.port, 3000);
        assert_eq!(c.peer_port, 4000);
        assert_eq!(c.bind.to_string(), "127.0.0.1");
        assert!(c.join.is_empty());
    }

    #[test]
    fn flags_override_the_config_file() {
        let dir = std::env::temp_dir().join(format!("kriminodb-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("node.toml");
        std::fs::write(
            &file,
            "port = 3005\nmaxclients = 7\njoin = [\"a:1\", \"b:2\"]\n",
        )
        .unwrap();
        let c = Config::parse_from_args([
            "kriminodb",
            "--config",
            file.to_str().unwrap(),
            "--port",
            "3009",
        ])
        .unwrap();
        assert_eq!(c.port, 3009);
        assert_eq!(c.maxclients, 7);
        assert_eq!(c.join, vec!["a:1".to_string(), "b:2".to_string()]);
    }

    #[test]
    fn memory_sizes_take_redis_units() {
        assert_eq!(parse_memory("0"), Ok(0));
        assert_eq!(parse_memory("12345"), Ok(12345));
        assert_eq!(parse_memory("100mb"), Ok(100 << 20));
        assert_eq!(parse_memory("1GB"), Ok(1 << 30));
        assert_eq!(parse_memory("2k"), Ok(2000));
        assert_eq!(parse_memory("3kb"), Ok(3072));
        assert_eq!(parse_memory("1m"), Ok(1_000_000));
        for bad in ["", "mb", "1tb", "-1", "1.5gb", "99999999999999gb"] {
            assert!(parse_memory(bad).is_err(), "{bad}");
        }
        let c = Config::parse_from_args([
            "kriminodb",
            "--maxmemory",
            "64mb",
            "--maxmemory-policy",
            "allkeys-lru",
        ])
        .unwrap();
        assert_eq!(c.maxmemory, 64 << 20);
        assert_eq!(c.maxmemory_policy, crate::store::Policy::AllKeysLru);
        assert_eq!(Config::default().maxmemory, 0);
        assert_eq!(
            Config::default().maxmemory_policy,
            crate::store::Policy::NoEviction
        );
    }

    #[test]
    fn security_settings_parse_from_flags_and_file() {
        let c = Config::default();
        assert!(c.protected_mode && c.requirepass.is_none() && c.tls_port.is_none());
        assert_eq!(c.timeout, 0);
        assert_eq!(c.client_output_buffer_limit, DEFAULT_OUTPUT_BUFFER_LIMIT);
        let c = Config::parse_from_args([
            "kriminodb",
            "--protected-mode",
            "no",
            "--timeout",
            "30",
            "--client-output-buffer-limit",
            "1000",
        ])
        .unwrap();
        assert!(!c.protected_mode);
        assert_eq!((c.timeout, c.client_output_buffer_limit), (30, 1000));

        let dir = std::env::temp_dir().join(format!("kriminodb-cfg3-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("node.toml");
        std::fs::write(
            &file,
            "requirepass = \"from file\"\nprotected_mode = false\ntls_port = 0\n\
             tls_cert_file = \"/c.pem\"\ntls_key_file = \"/k.pem\"\n",
        )
        .unwrap();
        let c = Config::parse_from_args(["kriminodb", "--config", file.to_str().unwrap()]).unwrap();
        assert_eq!(
            c.requirepass.as_ref().map(Password::expose),
            Some("from file")
        );
        assert!(
            !format!("{c:?}").contains("from file"),
            "Debug hides the password"
        );
        assert!(!c.protected_mode);
        assert_eq!(c.tls_port, Some(0));
        assert_eq!(c.tls_key_file, Some(PathBuf::from("/k.pem")));
    }

    #[test]
    fn an_empty_password_is_refused() {
        assert!(Config::parse_from_args(["kriminodb", "--requirepass", ""]).is_err());
    }

    #[test]
    fn a_tls_port_needs_a_certificate_and_key() {
        let err = Config::parse_from_args(["kriminodb", "--tls-port", "6380"]).unwrap_err();
        assert!(err.to_string().contains("--tls-cert-file"), "{err}");
    }

    #[test]
    fn unknown_file_settings_are_rejected() {
        let dir = std::env::temp_dir().join(format!("kriminodb-cfg2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("node.toml");
        std::fs::write(&file, "prot = 3005\n").unwrap();
        let err =
            Config::parse_from_args(["kriminodb", "--config", file.to_str().unwrap()]).unwrap_err();
        assert!(err.to_string().contains("unknown setting 'prot'"), "{err}");
    }
}
