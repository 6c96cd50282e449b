//! `switchboard-server --handler chat` beyond one machine: the cluster
//! (`--redis`) and accounts (`--accounts`) flags and how they set up the chat.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use switchboard_handlers::chat::{ClusterConfig, DEFAULT_QUEUE};
use switchboard_handlers::Chat;

use crate::cli::parse_duration;

/// The chat's cluster and accounts flags.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Chat: share one room with every chat server on this Redis
    /// (redis://HOST:PORT[/DB]): lines, /who, /msg, joins and nick changes
    /// cross servers, nicks are held in Redis, and accounts are kept there.
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,

    /// Chat with --redis: how long a nick stays held after its server stops
    /// renewing it (a crashed server's nicks are free after this).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
    pub redis_lease: Duration,

    /// Chat with --redis: room events that may wait for Redis; past it they
    /// are dropped (counted and logged), never blocking a worker.
    #[arg(long, value_name = "EVENTS", default_value_t = DEFAULT_QUEUE)]
    pub redis_queue: usize,

    /// Chat: keep accounts (/register, /login) in this embedded database
    /// file (created if missing). With --redis, accounts are in Redis instead.
    #[arg(long, value_name = "PATH")]
    pub accounts: Option<PathBuf>,
}

impl ClusterArgs {
    /// Whether any of these flags was given.
    pub fn any(&self) -> bool {
        self.redis.is_some() || self.accounts.is_some()
    }

    /// Sets up `chat` for the flags given: a clear error when Redis cannot
    /// be reached or the account store cannot be opened.
    pub fn apply(&self, chat: Chat) -> anyhow::Result<Chat> {
        let mut chat = chat;
        if let Some(url) = &self.redis {
            if self.accounts.is_some() {
                log::warn!("--accounts is not used with --redis: accounts are kept in Redis");
            }
            let config = ClusterConfig::new(url.clone()).lease(self.redis_lease).queue(self.redis_queue);
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
