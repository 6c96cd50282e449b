//! The file-get benchmark's pieces: a file of random bytes, and the minimal
//! blocking client that measures the loopback with the sendfile baseline.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};

/// A temporary folder holding the benchmark file; removed when dropped.
#[derive(Debug)]
pub(crate) struct BenchFile {
    pub(crate) dir: PathBuf,
    pub(crate) name: String,
    pub(crate) md5: String,
}

impl BenchFile {
    /// Writes `size` bytes of pseudo-random data (xorshift64*: incompressible,
    /// so the md5 means something) and computes their md5 on the way.
    pub(crate) fn create(size: u64) -> std::io::Result<BenchFile> {
        let dir = std::env::temp_dir().join(format!("switchboard-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let name = "bench.bin".to_string();
        let mut out = BufWriter::with_capacity(1 << 20, File::create(dir.join(&name))?);
        let mut h = Md5::new();
        let mut state: u64 = 0x2545_F491_4F6C_DD1D;
        let mut chunk = vec![0u8; 1 << 20];
        let mut left = size;
        while left > 0 {
            for w in chunk.chunks_exact_mut(8) {
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                w.copy_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
            }
            let n = usize::try_from(left).unwrap_or(usize::MAX).min(chunk.len());
            h.update(&chunk[..n]);
            out.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        out.flush()?;
        let md5 = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        Ok(BenchFile { dir, name, md5 })
    }

    pub(crate) fn path(&self) -> PathBuf {
        self.dir.join(&self.name)
    }
}

impl Drop for BenchFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Downloads the file `gets` times over one blocking connection (256 KiB
/// reads, content discarded) and returns bytes per second of content.
pub(crate) fn raw_download(addr: &str, name: &str, gets: u32) -> Result<f64, String> {
    let io = |e: std::io::Error| format!("baseline download: {e}");
    let mut s = TcpStream::connect(addr).map_err(io)?;
    s.set_read_timeout(Some(Duration::from_secs(30))).map_err(io)?;
    s.set_nodelay(true).map_err(io)?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    let start = Instant::now();
    for _ in 0..gets {
        s.write_all(format!("get {name}\n").as_bytes()).map_err(io)?;
        let mut len = [0u8; 4];
        s.read_exact(&mut len).map_err(io)?;
        let len = usize::try_from(i32::from_le_bytes(len)).map_err(|_| "bad header length".to_string())?;
        if len > 65536 {
            return Err("header too long".into());
        }
        let mut header = vec![0u8; len];
        s.read_exact(&mut header).map_err(io)?;
        let v: serde_json::Value = serde_json::from_slice(&header).map_err(|e| e.to_string())?;
        let mut left = v["file_size"].as_u64().ok_or("no file_size")?;
        while left > 0 {
            let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
            let n = s.read(&mut buf[..want]).map_err(io)?;
            if n == 0 {
                return Err("baseline download: connection closed early".into());
            }
            left -= n as u64;
            total += n as u64;
        }
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}
