//! Leak simulator (see issue 5). Placeholder args until the subcommand lands.
#[derive(clap::Args, Debug, Clone)]
pub struct SimulateArgs {}
