//! `sendfile-server`: the file baseline of the benchmarks. A minimal
//! blocking server, a thread per connection, that answers every request line
//! with the file protocol's response for one file (4-byte little-endian
//! header length, JSON header, content) and sends the content with
//! `sendfile()`: about as close to the loopback's bandwidth as a server gets.
//!
//! Usage: `sendfile-server --file PATH [--md5 HEX] [--listen ADDR]`; prints
//! `listening on ADDR` as its first line. Without `--md5` the md5 is
//! computed at start.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::Arc;

use md5::{Digest, Md5};

struct Served {
    file: File,
    size: u64,
    md5: String,
}

fn main() -> ExitCode {
    let (mut path, mut md5, mut listen) = (None, None, String::from("127.0.0.1:0"));
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--file", Some(v)) => path = Some(v),
            ("--md5", Some(v)) => md5 = Some(v),
            ("--listen", Some(v)) => listen = v,
            _ => path = None,
        }
    }
    let Some(path) = path else {
        eprintln!("usage: sendfile-server --file PATH [--md5 HEX] [--listen ADDR]");
        return ExitCode::from(2);
    };
    match serve(&path, md5, &listen) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sendfile-server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(path: &str, md5: Option<String>, listen: &str) -> std::io::Result<()> {
    let mut file = File::open(path)?;
    let size = file.metadata()?.len();
    let md5 = match md5 {
        Some(m) => m,
        None => {
            let mut h = Md5::new();
            let mut buf = vec![0; 1 << 20];
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            h.finalize().iter().map(|b| format!("{b:02x}")).collect()
        }
    };
    let served = Arc::new(Served { file, size, md5 });
    let listener = TcpListener::bind(listen)?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", listener.local_addr()?)?;
        out.flush()?;
    }
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let served = served.clone();
        std::thread::spawn(move || {
            let _ = connection(stream, &served);
        });
    }
    Ok(())
}

fn connection(stream: TcpStream, served: &Served) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::with_capacity(4096, stream.try_clone()?);
    let mut out = stream;
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.by_ref().take(4096).read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line);
        let name = text.trim_end().strip_prefix("get ").unwrap_or("file");
        let header =
            serde_json::json!({ "filename": name, "file_size": served.size, "md5": served.md5 }).to_string();
        let mut head = (header.len() as i32).to_le_bytes().to_vec();
        head.extend_from_slice(header.as_bytes());
        out.write_all(&head)?;
        let mut offset = 0u64;
        while offset < served.size {
            let chunk = usize::try_from(served.size - offset).unwrap_or(usize::MAX).min(1 << 30);
            let n = rustix::fs::sendfile(&out, &served.file, Some(&mut offset), chunk)?;
            if n == 0 {
                return Err(std::io::Error::other("the file shrank"));
            }
        }
    }
}
