//! `switchboard-client`: talk to a Switchboard server interactively, or
//! download and list files from its file handler.

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use switchboard_bins::cli::parse_duration;
use switchboard_bins::client::{self, download, interactive, Error};

/// A client for Switchboard servers.
///
/// With only ADDR it is interactive: what you type goes to the server and
/// what the server sends is printed as it arrives (echo, upper, chat). It
/// ends when the server closes, or when stdin ends (Ctrl-D): then it stops
/// sending and prints what the server still sends, for up to --linger.
///
/// With `get` or `list` it speaks the file protocol (a server run with
/// `--handler file`).
#[derive(Debug, Parser)]
#[command(
    name = "switchboard-client",
    version,
    about = "A client for Switchboard servers: interactive (echo, upper, chat), or download and list files.",
    after_help = EXAMPLES,
    subcommand_value_name = "MODE",
    subcommand_help_heading = "Modes"
)]
struct Args {
    /// The server's address: HOST:PORT, or unix:PATH for a Unix domain socket
    /// (with --tls the certificate must then name localhost).
    #[arg(value_name = "ADDR")]
    addr: String,

    #[command(subcommand)]
    mode: Option<Mode>,

    /// Give up connecting after this long (e.g. 500ms, 10s; 0s: the system's limit).
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
    timeout: Duration,

    /// get/list: fail when the server sends nothing for this long (0s: wait forever).
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_duration, default_value = "30s")]
    read_timeout: Duration,

    /// Interactive: once stdin ends, how long to keep printing what the server sends.
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_duration, default_value = "5s")]
    linger: Duration,

    // --- UDP ---
    /// Interactive over UDP (a server run with --udp): each line typed is one
    /// datagram, each datagram received is printed. A chat server's cookie
    /// (`* cookie HEX`) is sent back at once (`/cookie HEX`), which proves
    /// this address receives, so the room's traffic reaches it.
    #[arg(long)]
    udp: bool,

    #[command(flatten)]
    tls: switchboard_bins::tls::TlsArgs,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Download a file: its md5 is checked before it appears under its name.
    ///
    /// The content goes to a hidden temporary file beside the destination
    /// and is renamed only once complete and verified; on any failure
    /// (server error, cut connection, md5 mismatch, Ctrl-C) nothing is left
    /// behind and the exit status is non-zero. A progress bar is drawn when
    /// stderr is a terminal.
    Get {
        /// The file's name on the server, relative to its root.
        #[arg(value_name = "NAME")]
        name: String,

        /// Where to save: a folder (the file keeps its base name) or a file
        /// path [default: the base name of NAME in the current folder].
        #[arg(short, long, value_name = "PATH")]
        output: Option<PathBuf>,

        /// Replace the destination if it exists (otherwise an existing file
        /// is an error and is left untouched).
        #[arg(short, long)]
        force: bool,
    },
    /// List the files the server offers, with their sizes in bytes.
    List,
}

const EXAMPLES: &str = "\
Examples:
  # Type lines and see the replies as they come; Ctrl-D ends.
  switchboard-client 127.0.0.1:7878

  # One shot: send a line, print the reply, exit once the server is done.
  printf 'hello\\n' | switchboard-client 127.0.0.1:7878

  # Over UDP (switchboard-server --udp): a datagram per line.
  switchboard-client --udp 127.0.0.1:7878

  # The files on a file server (switchboard-server --handler file).
  switchboard-client 127.0.0.1:7878 list

  # Save docs/a.pdf as ./a.pdf; as /tmp/a.pdf; as ./b.pdf, replacing it.
  switchboard-client 127.0.0.1:7878 get docs/a.pdf
  switchboard-client 127.0.0.1:7878 get docs/a.pdf -o /tmp/
  switchboard-client 127.0.0.1:7878 get docs/a.pdf -o b.pdf --force

Exit status: 0 on success; 1 on an error, explained in one line on stderr
(a failed download leaves nothing behind); 2 on bad arguments; 130 when a
download is interrupted with Ctrl-C.";

fn main() -> ExitCode {
    let args: Args = switchboard_bins::cli::parse_args();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchboard-client: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    match &args.mode {
        None if args.udp => {
            let socket = client::udp::connect(&args.addr).map_err(|e| e.to_string())?;
            let stdin = io::BufReader::new(io::stdin());
            client::udp::run(socket, stdin, io::stdout(), args.linger).map_err(|e| e.to_string())
        }
        Some(_) if args.udp => Err("--udp is interactive only: get and list use TCP".to_owned()),
        None => {
            let stream = args.tls.connect(&args.addr, args.timeout)?;
            if io::stdin().is_terminal() && io::stderr().is_terminal() {
                eprintln!("connected to {}; Ctrl-D to end", args.addr);
            }
            interactive::run(stream, io::stdin(), io::stdout(), args.linger).map_err(|e| e.to_string())
        }
        Some(Mode::List) => {
            let mut stream = open(&args)?;
            let files = download::list(&mut stream).map_err(|e| e.to_string())?;
            print_stdout(&download::format_list(&files))
        }
        Some(Mode::Get { name, output, force }) => {
            let target = download::plan(name, output.as_deref(), *force).map_err(|e| e.to_string())?;
            download::remove_partial_on_interrupt().map_err(|e| e.to_string())?;
            let mut stream = open(&args)?;
            let saved = download::fetch(&mut stream, &target, true).map_err(|e| match e {
                Error::Protocol(_) | Error::Stalled(_) | Error::Md5Mismatch { .. } | Error::Io { .. } => {
                    format!("{e}; nothing saved")
                }
                e => e.to_string(),
            })?;
            print_stdout(&format!(
                "saved {} ({} bytes, md5 {} verified)\n",
                client::terminal::escape_name(&saved.path.to_string_lossy()),
                saved.size,
                saved.md5
            ))
        }
    }
}

fn open(args: &Args) -> Result<client::Stream, String> {
    let stream = args.tls.connect(&args.addr, args.timeout)?;
    client::set_read_timeout(&stream, args.read_timeout)
        .map_err(|e| format!("setting the read timeout: {e}"))?;
    Ok(stream)
}

/// Prints to stdout; a closed stdout (`| head`) is not an error.
fn print_stdout(text: &str) -> Result<(), String> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(format!("writing to stdout: {e}")),
    }
}
