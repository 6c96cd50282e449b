//! `switchboard-server --handler chat` beyond one machine: the cluster
//! (`--redis`) and accounts (`--accounts`) flags and how they set up the chat.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use switchboard_handlers::chat::{ClusterConfig, DEFAULT_QUEUE};
use switchboard_handlers::Chat;

use crate::cli::parse_duration;

/// The longest `--redis-url-file` read: a URL, not a document.
const MAX_URL_FILE: u64 = 4096;

/// The environment variable `--redis` is read from when not given.
pub const REDIS_URL_ENV: &str = "SWITCHBOARD_REDIS_URL";

/// The chat's cluster and accounts flags.
#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("redis_source").args(["redis", "redis_url_file"])))]
pub struct ClusterArgs {
    /// Share one room with every chat server on this Redis
    /// (redis://[[USER]:PASSWORD@]HOST:PORT[/DB], or rediss://... for TLS):
    /// lines, /who, /msg, joins and nick changes cross servers, nicks are
    /// held in Redis, and accounts are kept there. The password is never
    /// logged; give it in the environment variable or --redis-url-file
    /// rather than here, where the process list shows it.
    #[arg(long, value_name = "URL", env = REDIS_URL_ENV, hide_env_values = true)]
    pub redis: Option<String>,

    /// Like --redis, the URL read from this file (its first line),
    /// which keeps the password out of the process list and the environment
    /// (not with --redis, nor with SWITCHBOARD_REDIS_URL set: clap counts
    /// that as --redis).
    #[arg(long, value_name = "PATH")]
    pub redis_url_file: Option<PathBuf>,

    /// With a rediss:// URL: trust only the CA certificate(s) in this
    /// PEM file for Redis's certificate [default: the system's CAs].
    #[arg(long, value_name = "PEM", requires = "redis_source")]
    pub redis_ca: Option<PathBuf>,

    /// With --redis: how long a nick stays held after its server stops
    /// renewing it (a crashed server's nicks are free after this, and a
    /// server notices a dead Redis within it).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
    pub redis_lease: Duration,

    /// With --redis: room events that may wait for Redis; past it they
    /// are dropped (counted and logged), never blocking a worker.
    #[arg(long, value_name = "EVENTS", default_value_t = DEFAULT_QUEUE)]
    pub redis_queue: usize,

    /// Keep accounts (/register, /login) in this embedded database
    /// file (created if missing). With --redis, accounts are in Redis instead.
    #[arg(long, value_name = "PATH")]
    pub accounts: Option<PathBuf>,
}

impl ClusterArgs {
    /// Whether any of these flags was given.
    pub fn any(&self) -> bool {
        self.redis.is_some() || self.redis_url_file.is_some() || self.accounts.is_some()
    }

    /// The Redis URL: `--redis` (or its environment variable), or the first
    /// line of `--redis-url-file`. Errors never show the file's text.
    fn redis_url(&self) -> anyhow::Result<Option<String>> {
        let Some(path) = &self.redis_url_file else { return Ok(self.redis.clone()) };
        let shown = path.display();
        let file = std::fs::File::open(path).with_context(|| format!("{shown}: cannot open"))?;
        let mut text = String::new();
        file.take(MAX_URL_FILE + 1)
            .read_to_string(&mut text)
            .with_context(|| format!("{shown}: cannot read it as text"))?;
        anyhow::ensure!(text.len() as u64 <= MAX_URL_FILE, "{shown}: longer than {MAX_URL_FILE} bytes");
        let url = text.lines().next().unwrap_or("").trim();
        anyhow::ensure!(!url.is_empty(), "{shown}: no URL on its first line");
        Ok(Some(url.to_owned()))
    }

    /// Sets up `chat` for the flags given: a clear error when Redis cannot
    /// be reached or the account store cannot be opened.
    pub fn apply(&self, chat: Chat) -> anyhow::Result<Chat> {
        let mut chat = chat;
        if let Some(url) = self.redis_url().context("--redis-url-file")? {
            if self.accounts.is_some() {
                log::warn!("--accounts is not used with --redis: accounts are kept in Redis");
            }
            let mut config = ClusterConfig::new(&url).lease(self.redis_lease).queue(self.redis_queue);
            if let Some(path) = &self.redis_ca {
                let (pem, _) = crate::tls::read_ca(path).map_err(anyhow::Error::msg).context("--redis-ca")?;
                config = config.ca_pem(pem);
            }
            let from_command_line = self.redis_url_file.is_none()
                && std::env::var(REDIS_URL_ENV).ok().as_deref() != Some(url.as_str());
            if from_command_line && config.has_password() {
                log::warn!(
                    "the Redis password given in --redis shows in the process list: \
                     give the URL in {REDIS_URL_ENV} or --redis-url-file instead"
                );
            }
            chat = chat.cluster(config).context("--redis")?;
        } else if let Some(path) = &self.accounts {
            chat = chat.accounts_file(path).context("--accounts")?;
        }
        Ok(chat)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use switchboard_handlers::chat::DEFAULT_LEASE;

    use super::*;

    #[derive(Debug, Parser)]
    struct Flags {
        #[command(flatten)]
        cluster: ClusterArgs,
    }

    #[test]
    fn the_defaults_match_the_library() {
        let f = Flags::parse_from(["x"]);
        assert_eq!(f.cluster.redis_lease, DEFAULT_LEASE);
        assert_eq!(f.cluster.redis_queue, DEFAULT_QUEUE);
        assert!(!f.cluster.any());
        let f = Flags::parse_from(["x", "--redis", "redis://h:1", "--redis-lease", "1500ms"]);
        assert_eq!(f.cluster.redis_lease, Duration::from_millis(1500));
        assert!(f.cluster.any());
    }
}
