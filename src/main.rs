use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = tessera::cli::Cli::parse();
    let telemetry = tessera::telemetry::init(cli.log_format == tessera::cli::LogFormat::Json);
    let result = tessera::cli::run(cli).await;
    // Spans still buffered go out before the process exits.
    telemetry.shutdown();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", tessera::cli::describe(&e));
            std::process::ExitCode::FAILURE
        }
    }
}
