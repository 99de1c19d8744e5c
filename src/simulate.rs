//! Leak simulator (see issue 5). Placeholder args until the subcommand lands.
#[derive(clap::Args, Debug, Clone)]
pub struct SimulateArgs {}

pub fn run(_args: &SimulateArgs) -> anyhow::Result<()> {
    anyhow::bail!("simulate-leak is not built yet")
}
