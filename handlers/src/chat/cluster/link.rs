//! The outbound bridge's connection to Redis, on which a pipeline gives
//! up at the first answer that does not come within the read timeout.
//!
//! The `redis` crate reads every answer of a pipeline even after one failed
//! (to keep the connection in step), so against a Redis that stopped
//! answering, a pipeline of N commands waits N read timeouts: a renewal of
//! a few hundred nicks would hold the bridge for minutes. Here the first
//! failed read ends it; the bridge then drops the connection anyway.

use redis::{Connection, ConnectionLike, RedisResult, Value};

/// A connection whose pipelines wait at most one read timeout for an
/// answer that does not come.
pub(crate) struct Link(Connection);

impl Link {
    pub(crate) fn new(con: Connection) -> Link {
        Link(con)
    }
}

impl ConnectionLike for Link {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        self.0.req_packed_command(cmd)
    }

    /// Like the crate's, minus the waiting on after a read failed: answers
    /// `offset..offset + count` are returned, a server error among them
    /// kept as a value (as the crate does), an I/O error ends it at once.
    fn req_packed_commands(&mut self, cmd: &[u8], offset: usize, count: usize) -> RedisResult<Vec<Value>> {
        self.0.send_packed_command(cmd)?;
        let mut answers = Vec::with_capacity(count);
        for i in 0..offset + count {
            let answer = self.0.recv_response()?;
            if i >= offset {
                answers.push(answer);
            }
        }
        Ok(answers)
    }

    fn get_db(&self) -> i64 {
        self.0.get_db()
    }

    fn check_connection(&mut self) -> bool {
        self.0.check_connection()
    }

    fn is_open(&self) -> bool {
        self.0.is_open()
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::net::{TcpListener, TcpStream};
    use std::thread::JoinHandle;
    use std::time::{Duration, Instant};

    use super::*;

    /// A "Redis" that answers its first commands with `answers` (after the
    /// two `CLIENT SETINFO` of the connection's set-up), then nothing, its
    /// socket held open until the client closes.
    fn fake_redis(answers: &'static [&'static str]) -> (Link, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (sock, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(sock.try_clone().unwrap());
            let mut writer: &TcpStream = &sock;
            let next = |reader: &mut BufReader<TcpStream>| -> bool {
                // `*N`, then `$LEN` and the word for each of the N parts.
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return false;
                }
                let parts: usize = line.trim_end().trim_start_matches('*').parse().unwrap();
                for _ in 0..2 * parts {
                    reader.read_line(&mut String::new()).unwrap();
                }
                true
            };
            for answer in ["+OK\r\n", "+OK\r\n"].iter().chain(answers) {
                if !next(&mut reader) {
                    return;
                }
                writer.write_all(answer.as_bytes()).unwrap();
            }
            while next(&mut reader) {}
        });
        let client = redis::Client::open(format!("redis://{addr}")).unwrap();
        let con = client.get_connection_with_timeout(Duration::from_secs(5)).unwrap();
        (Link::new(con), server)
    }

    #[test]
    fn a_pipeline_against_a_redis_that_stops_answering_waits_one_timeout() {
        let (link, server) = fake_redis(&["+PONG\r\n"]);
        let timeout = Duration::from_millis(300);
        link.0.set_read_timeout(Some(timeout)).unwrap();
        let mut link = link;
        let mut p = redis::pipe();
        for _ in 0..20 {
            p.cmd("PING");
        }
        let started = Instant::now();
        let e = p.query::<Vec<String>>(&mut link).unwrap_err();
        let took = started.elapsed();
        assert!(e.is_timeout(), "{e}");
        // One timeout, not the 19 the crate's own pipeline waits (5.7 s).
        assert!(took < timeout * 5, "{took:?}");
        drop(link);
        server.join().unwrap();
    }

    #[test]
    fn ignored_answers_and_server_errors_are_as_the_crate_gives_them() {
        let (mut link, server) = fake_redis(&["+OK\r\n", ":7\r\n", ":8\r\n", "+OK\r\n", "-ERR nope\r\n"]);
        link.0.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut p = redis::pipe();
        p.cmd("A").ignore().cmd("B").cmd("C");
        assert_eq!(p.query::<(i64, i64)>(&mut link).unwrap(), (7, 8));
        let mut p = redis::pipe();
        p.cmd("D").ignore().cmd("E");
        let e = p.query::<(i64,)>(&mut link).unwrap_err();
        assert_eq!(e.code(), Some("ERR"), "{e}");
        drop(link);
        server.join().unwrap();
    }
}
