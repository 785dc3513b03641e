fn main() -> std::process::ExitCode {
    lote::cli::main()
}
