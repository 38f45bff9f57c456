use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = tessera::cli::Cli::parse();
    tessera::cli::init_logging(cli.log_format);
    match tessera::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", tessera::cli::describe(&e));
            std::process::ExitCode::FAILURE
        }
    }
}
