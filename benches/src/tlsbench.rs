//! The TLS rows: echo over TLS at 64 and 1,000 connections against the
//! tokio + tokio-rustls baseline (`tokio-tls-echo`, the same rustls and
//! ring provider), file get MB/s over TLS beside plain TCP, and full
//! handshakes per second. The certificate is made at run time (`rcgen`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use crate::procs::{run_load, Bins, ServerProc};
use crate::{median, Options};

/// Threads that open connections for the handshake rate.
const HANDSHAKE_THREADS: usize = 2;

/// The PEM files of a run.
struct Pki {
    dir: PathBuf,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn make_pki() -> Result<Pki, String> {
    let e = |x: rcgen::Error| x.to_string();
    let dir = std::env::temp_dir().join(format!("switchboard-bench-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|x| x.to_string())?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "Switchboard bench CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_key = KeyPair::generate().map_err(e)?;
    let ca_cert = ca.self_signed(&ca_key).map_err(e)?;
    let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).map_err(e)?;
    let key = KeyPair::generate().map_err(e)?;
    let cert = leaf.signed_by(&key, &ca_cert, &ca_key).map_err(e)?;
    let write = |name: &str, pem: String| -> Result<PathBuf, String> {
        let p = dir.join(name);
        std::fs::write(&p, pem).map_err(|x| x.to_string())?;
        Ok(p)
    };
    Ok(Pki {
        ca: write("ca.pem", ca_cert.pem())?,
        cert: write("cert.pem", format!("{}{}", cert.pem(), ca_cert.pem()))?,
        key: write("key.pem", key.serialize_pem())?,
        dir,
    })
}

fn start(bins: &Bins, tokio: bool, pki: &Pki, extra: &[&str]) -> Result<ServerProc, String> {
    let (cert, key) = (pki.cert.to_string_lossy(), pki.key.to_string_lossy());
    if tokio {
        let bin = bins.server.with_file_name("tokio-tls-echo");
        ServerProc::start(&bin, &["--cert", &cert, "--key", &key])
    } else {
        let mut args = vec!["--listen", "127.0.0.1:0", "--tls-cert", &cert, "--tls-key", &key];
        args.extend_from_slice(extra);
        ServerProc::start(&bins.server, &args)
    }
}

fn load(bins: &Bins, pki: &Pki, addr: &str, args: &[&str]) -> Result<serde_json::Value, String> {
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    all.extend(["--tls", "--ca"].map(String::from));
    all.push(pki.ca.to_string_lossy().into_owned());
    all.extend(["-t".to_owned(), addr.to_owned()]);
    let v = run_load(&bins.load, &all, Duration::from_secs(300))?;
    let failed =
        v["connections"]["failed"].as_u64().unwrap_or(0) + v["errors"]["total"].as_u64().unwrap_or(0);
    if failed > 0 {
        return Err(format!("{failed} errors or failed connections"));
    }
    Ok(v)
}

/// Full handshakes a second (no resumption): connect, handshake, send
/// `close_notify`, close, on [`HANDSHAKE_THREADS`] threads for `d`.
fn handshakes(addr: &str, ca: &Path, d: Duration) -> Result<f64, String> {
    let pem = std::fs::read(ca).map_err(|e| e.to_string())?;
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pem) {
        roots.add(c.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    let config = Arc::new(config);
    let (done, stop, failed) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let started = Instant::now();
    let threads: Vec<_> = (0..HANDSHAKE_THREADS)
        .map(|_| {
            let (config, addr) = (Arc::clone(&config), addr.to_owned());
            let (done, stop, failed) = (Arc::clone(&done), Arc::clone(&stop), Arc::clone(&failed));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if one_handshake(&config, &addr).is_ok() {
                        done.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(d);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let failed = failed.load(Ordering::Relaxed);
    if failed > 0 {
        return Err(format!("{failed} handshakes failed"));
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

fn one_handshake(config: &Arc<ClientConfig>, addr: &str) -> std::io::Result<()> {
    let mut sock = TcpStream::connect(addr)?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    let name = ServerName::try_from("localhost").map_err(std::io::Error::other)?;
    let mut conn = ClientConnection::new(Arc::clone(config), name).map_err(std::io::Error::other)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)?;
    }
    // One round trip so the server has finished its side too.
    conn.writer().write_all(b"x")?;
    conn.complete_io(&mut sock)?;
    let mut b = [0u8; 1];
    loop {
        match conn.reader().read(&mut b) {
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                conn.complete_io(&mut sock)?;
            }
            Err(e) => return Err(e),
        }
    }
    conn.send_close_notify();
    let _ = conn.complete_io(&mut sock);
    Ok(())
}

/// Runs the rows; returns the markdown section.
pub(crate) fn section(opts: &Options, bins: &Bins) -> String {
    let mut s = String::from("\n## TLS\n\n");
    let pki = match make_pki() {
        Ok(p) => p,
        Err(e) => return s + &format!("Not run: cannot make the test certificate: {e}\n"),
    };
    let dur = opts.duration();
    let mut failures = Vec::new();
    s.push_str(
        "Echo 64 B over TLS 1.3 (rustls, ring) against `tokio-tls-echo` (tokio + tokio-rustls, the same \
         rustls); medians over the rounds. Target: msg/s ≥ 1.2× the baseline and p99 ≤ the baseline's.\n\n\
         | load | switchboard msg/s | baseline msg/s | ratio | switchboard p99 µs | baseline p99 µs | target |\n\
         |---|---:|---:|---:|---:|---:|---|\n",
    );
    for (conns, label) in [(64usize, "64"), (1_000, "1,000")] {
        // (msg/s, p99 µs) per round.
        let mut sb: Vec<(f64, f64)> = Vec::new();
        let mut tk: Vec<(f64, f64)> = Vec::new();
        for round in 0..opts.rounds {
            let order = if round % 2 == 0 { [false, true] } else { [true, false] };
            for tokio in order {
                let name = if tokio { "tokio-rustls" } else { "switchboard" };
                let run = start(bins, tokio, &pki, &["--handler", "echo"]).and_then(|srv| {
                    let c = conns.to_string();
                    load(bins, &pki, &srv.addr, &["echo", "-c", &c, "--size", "64", "-d", dur])
                });
                match run {
                    Ok(v) => {
                        let msgs = v["throughput_per_s"].as_f64().unwrap_or(0.0);
                        let p99 = v["latency_us"]["p99"].as_f64().unwrap_or(0.0);
                        eprintln!("  TLS echo 64 B, {conns} connections  {name:<12} {msgs:>9.0} msg/s  p99 {p99:>8.0} µs");
                        if tokio { &mut tk } else { &mut sb }.push((msgs, p99));
                    }
                    Err(e) => failures.push(format!("TLS echo, {conns} connections, {name}: {e}")),
                }
            }
        }
        let med =
            |v: &[(f64, f64)], i: usize| median(v.iter().map(|x| if i == 0 { x.0 } else { x.1 }).collect());
        if sb.is_empty() || tk.is_empty() {
            continue;
        }
        let (m_sb, m_tk, p_sb, p_tk) = (med(&sb, 0), med(&tk, 0), med(&sb, 1), med(&tk, 1));
        let ratio = m_sb / m_tk.max(1e-9);
        let met = if ratio >= 1.2 && p_sb <= p_tk { "met" } else { "not met" };
        s.push_str(&format!(
            "| TLS echo 64 B, {label} connections | {m_sb:.0} | {m_tk:.0} | {ratio:.2}× | {p_sb:.0} | {p_tk:.0} | {met} |\n"
        ));
    }

    // File get: the same file over TLS and over plain TCP.
    let size: u64 = opts.file_size().min(256 << 20);
    let root = pki.dir.join("files");
    let file_rows = (|| -> Result<(f64, f64), String> {
        std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
        let f = std::fs::File::create(root.join("big.bin")).map_err(|e| e.to_string())?;
        f.set_len(size).map_err(|e| e.to_string())?;
        let r = root.to_string_lossy();
        let gets = opts.file_gets().to_string();
        let tls = start(bins, false, &pki, &["--handler", "file", "--root", &r])?;
        let v = load(bins, &pki, &tls.addr, &["file", "big.bin", "-c", "2", "-n", &gets, "--no-md5"])?;
        drop(tls);
        let plain =
            ServerProc::start(&bins.server, &["--listen", "127.0.0.1:0", "--handler", "file", "--root", &r])?;
        let args: Vec<String> = ["file", "big.bin", "-c", "2", "-n", &gets, "--no-md5", "-t", &plain.addr]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let p = run_load(&bins.load, &args, Duration::from_secs(300))?;
        Ok((v["mb_per_s"].as_f64().unwrap_or(0.0), p["mb_per_s"].as_f64().unwrap_or(0.0)))
    })();
    match file_rows {
        Ok((tls, plain)) => {
            eprintln!("  TLS file get  {tls:.0} MB/s (plain TCP, sendfile: {plain:.0} MB/s)");
            s.push_str(&format!(
                "\nFile get of a {} MiB file, 2 connections: **{tls:.0} MB/s over TLS** (read in chunks and \
                 encrypted), {plain:.0} MB/s over plain TCP (`sendfile`).\n",
                size >> 20
            ));
        }
        Err(e) => failures.push(format!("TLS file get: {e}")),
    }

    // Handshakes per second, both servers.
    let d = if opts.quick { Duration::from_secs(1) } else { Duration::from_secs(3) };
    let mut hs = Vec::new();
    for tokio in [false, true] {
        let name = if tokio { "tokio-rustls" } else { "switchboard" };
        match start(bins, tokio, &pki, &["--handler", "echo"])
            .and_then(|srv| handshakes(&srv.addr, &pki.ca, d))
        {
            Ok(rate) => {
                eprintln!("  TLS handshakes  {name:<12} {rate:.0}/s");
                hs.push(format!("{name} {rate:.0}/s"));
            }
            Err(e) => failures.push(format!("TLS handshakes, {name}: {e}")),
        }
    }
    if !hs.is_empty() {
        s.push_str(&format!(
            "\nFull TLS 1.3 handshakes a second (no resumption; {HANDSHAKE_THREADS} client threads, each \
             handshake followed by one echo and close_notify): {}.\n",
            hs.join(", ")
        ));
    }
    for f in &failures {
        s.push_str(&format!("\n- not measured: {f}\n"));
    }
    s
}
