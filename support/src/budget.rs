//! The descriptor budget a server logs at start, and the derivation
//! `ServerBuilder::max_connections` documents, checked against it.

/// The figures of the start line "descriptor limit L: O open at start, S
/// for the server, R kept for handlers, C for connections".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DescriptorBudget {
    /// The soft descriptor limit in force.
    pub limit: usize,
    /// Descriptors the process held before the server opened its own: the
    /// standard streams and whatever it inherited (a test harness's pipes),
    /// which differs between machines.
    pub open_at_start: usize,
    /// The server's own descriptors: 4 + 2 per worker.
    pub server: usize,
    /// Kept for handlers' files and lingering sockets.
    pub reserve: usize,
    /// The default connection limit.
    pub connections: usize,
}

impl DescriptorBudget {
    /// The budget in a server's log, `None` when the log has no such line.
    pub fn from_log(log: &str) -> Option<DescriptorBudget> {
        let line = log.lines().find(|l| l.contains("descriptor limit "))?;
        let rest = &line[line.find("descriptor limit ")? + "descriptor limit ".len()..];
        let number = |after: &str| -> Option<usize> {
            let at = if after.is_empty() { 0 } else { rest.find(after)? + after.len() };
            let digits: String = rest[at..].chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        };
        Some(DescriptorBudget {
            limit: number("")?,
            open_at_start: number(": ")?,
            server: number("at start, ")?,
            reserve: number("for the server, ")?,
            connections: number("kept for handlers, ")?,
        })
    }

    /// Asserts the derivation for a descriptor limit of `limit` and
    /// `workers` workers: the server's own 4 + 2 per worker, a reserve of
    /// max(64, limit / 8) but at most half of what is left, the rest for
    /// connections. Returns the connection limit.
    pub fn check(&self, limit: usize, workers: usize) -> usize {
        assert_eq!(self.limit, limit, "{self:?}");
        // The standard streams at least; a few inherited pipes at most.
        assert!((3..=32).contains(&self.open_at_start), "{self:?}");
        assert_eq!(self.server, 4 + 2 * workers, "{self:?}");
        let left = limit - self.open_at_start - self.server;
        assert_eq!(self.reserve, 64.max(limit / 8).min(left / 2), "{self:?}");
        assert_eq!(self.connections, left - self.reserve, "{self:?}");
        self.connections
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_start_line() {
        let log = "[.. INFO switchboard::server] descriptor limit 256: 5 open at start, 8 for the server, \
                   64 kept for handlers, 179 for connections\n";
        let budget = DescriptorBudget::from_log(log).unwrap();
        assert_eq!(
            budget,
            DescriptorBudget { limit: 256, open_at_start: 5, server: 8, reserve: 64, connections: 179 }
        );
        assert_eq!(budget.check(256, 2), 179);
        assert_eq!(DescriptorBudget::from_log("listening on 127.0.0.1:1"), None);
    }

    #[test]
    #[should_panic]
    fn a_wrong_derivation_fails() {
        DescriptorBudget { limit: 256, open_at_start: 5, server: 8, reserve: 64, connections: 180 }
            .check(256, 2);
    }
}
