//! `switchboard-server accounts ...`: the chat's accounts from the command
//! line (PROTOCOLS.md, "Accounts").

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgGroup, Args, Subcommand};
use switchboard_handlers::chat::{delete_account, AccountStore};

/// What to do with the accounts.
#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// Remove an account, so its name is free to register again. Exit
    /// status 0 when it is removed, 1 when no account has that name or the
    /// store cannot be used.
    Delete(DeleteArgs),
}

/// `accounts delete NAME --accounts PATH | --redis URL`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("store").required(true).args(["accounts", "redis"])))]
pub struct DeleteArgs {
    /// The account's name, compared as nicks are (case, look-alike letters
    /// and accents do not matter).
    #[arg(value_name = "NAME")]
    pub name: String,

    /// The embedded account store (a server's --accounts PATH). Stop the
    /// server first: it holds the file locked while it runs.
    #[arg(long, value_name = "PATH")]
    pub accounts: Option<PathBuf>,

    /// The cluster's Redis (the servers' --redis URL); the servers may run.
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,
}

/// Runs `cmd`: one line on stdout when it did it, one on stderr when not.
pub fn run(cmd: AccountsCommand) -> ExitCode {
    match cmd {
        AccountsCommand::Delete(args) => {
            let store = match (args.accounts, args.redis) {
                (Some(path), _) => AccountStore::File(path),
                (None, Some(url)) => AccountStore::Redis(url),
                (None, None) => unreachable!("clap requires --accounts or --redis"),
            };
            match delete_account(&store, &args.name) {
                Ok(Some(name)) => {
                    println!("deleted account {name}");
                    ExitCode::SUCCESS
                }
                Ok(None) => {
                    eprintln!("switchboard-server: no account named {}", args.name);
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("switchboard-server: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
