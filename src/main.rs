use std::sync::Arc;

use clap::Parser;
use tessera::service::audit::Idleness;

// Every request allocates a few dozen small objects from two runtime threads; glibc's malloc spent
// about 15% of server CPU on them (consolidating and locking arenas). mimalloc's thread-local
// free lists make that a few percent, and it returns freed memory to the OS more readily.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // The runtime #[tokio::main] would build, plus the hooks that tell the audit writer whether
    // the workers have had anything to do (it paces its commits only while they have).
    let idleness = Arc::new(Idleness::default());
    let workers = std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or_else(tessera::shards::default_count);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    idleness.install(builder.worker_threads(workers).enable_all(), workers);
    match builder.build() {
        Ok(runtime) => runtime.block_on(run(idleness)),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(idleness: Arc<Idleness>) -> std::process::ExitCode {
    let cli = tessera::cli::Cli::parse();
    let telemetry = tessera::telemetry::init(cli.log_format == tessera::cli::LogFormat::Json);
    let result = tessera::cli::run(cli, Some(idleness)).await;
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
