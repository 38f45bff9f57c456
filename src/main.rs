use clap::Parser;

// Every request allocates a few dozen small objects from two runtime threads; glibc's malloc spent
// about 15% of server CPU on them (consolidating and locking arenas). mimalloc's thread-local
// free lists make that a few percent, and it returns freed memory to the OS more readily.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
