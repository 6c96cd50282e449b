//! The README as a newcomer replays it: its handler is the example that
//! compiles, its shell sessions print what it shows, its links and the
//! docs' links resolve inside the repository, and each binary's `-h` opens
//! with its own description.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use switchboard_test_support::child::run;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the repository root").to_path_buf()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// The bodies of the fenced blocks of `markdown` whose info string is `lang`.
fn blocks(markdown: &str, lang: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.split_inclusive('\n') {
        let fence = line.trim_end();
        match current.as_mut() {
            None if fence == format!("```{lang}") => current = Some(String::new()),
            Some(body) if fence == "```" => {
                out.push(std::mem::take(body));
                current = None;
            }
            Some(body) => body.push_str(line),
            None => {}
        }
    }
    out
}

#[test]
fn the_readme_handler_is_the_reverse_example_byte_for_byte() {
    let readme = read("README.md");
    let rust = blocks(&readme, "rust");
    assert_eq!(rust.len(), 1, "README.md has one Rust block, the handler");
    // (The example itself is compiled by `cargo test`, as every example is.)
    assert!(
        rust[0] == read("core/examples/reverse.rs"),
        "README's handler differs from core/examples/reverse.rs"
    );
}

#[test]
fn the_readme_sessions_print_what_the_readme_shows() {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_switchboard-server")).parent().unwrap().to_path_buf();
    // The client and the server are built beside each other.
    assert!(bin_dir.join("switchboard-client").exists());
    let path = std::env::join_paths(
        std::iter::once(bin_dir).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .unwrap();
    let out = run(
        Command::new("bash")
            .arg(repo().join("scripts/readme-sessions.sh"))
            .arg(repo().join("README.md"))
            .env("PATH", path),
        Duration::from_secs(120),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.starts_with("4 README sessions, "), "{stdout}");
}

#[test]
fn every_link_in_the_readme_and_the_docs_resolves_inside_the_repository() {
    let mut docs = vec!["README.md".to_string(), "TESTING.md".into(), "BENCHMARKS.md".into()];
    for entry in std::fs::read_dir(repo().join("docs")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".md") {
            docs.push(format!("docs/{name}"));
        }
    }
    let mut checked = 0;
    for doc in &docs {
        let text = read(doc);
        let dir = repo().join(doc).parent().unwrap().to_path_buf();
        for (i, _) in text.match_indices("](") {
            let rest = &text[i + 2..];
            let target = &rest[..rest.find(')').unwrap_or(rest.len())];
            let file = target.split('#').next().unwrap();
            if file.is_empty() || file.contains("://") || file.starts_with("mailto:") {
                continue;
            }
            let resolved =
                dir.join(file).canonicalize().unwrap_or_else(|e| panic!("{doc}: link {target}: {e}"));
            assert!(
                resolved.starts_with(repo().canonicalize().unwrap()),
                "{doc}: {target} leaves the repository"
            );
            checked += 1;
        }
        assert!(!text.contains("shared/"), "{doc} points outside the repository (shared/)");
    }
    // README links the docs, the docs link each other.
    assert!(checked >= 5, "only {checked} links found");
}

#[test]
fn each_binary_opens_its_help_with_its_own_description() {
    let description = "The Switchboard binaries";
    for (bin, opening) in [
        (env!("CARGO_BIN_EXE_switchboard-server"), "A multithreaded TCP server"),
        (env!("CARGO_BIN_EXE_switchboard-client"), "A client for Switchboard servers"),
        (env!("CARGO_BIN_EXE_switchboard-load"), "Load generator for Switchboard servers"),
    ] {
        let out = run(Command::new(bin).arg("-h"), Duration::from_secs(30));
        assert!(out.status.success(), "{bin} -h");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.starts_with(opening), "{bin} -h opens with {:?}", help.lines().next());
        assert!(!help.contains(description), "{bin} -h shows the package description");
    }
}
