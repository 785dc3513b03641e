//! A model failure (a panic or a libtorch error on a model thread) is an incident: logged
//! once, here, with all it says (libtorch's message and backtrace, library paths) under a
//! fresh request id, while callers on every way in (gRPC, HTTP, `lote run`, jobs) hear only
//! `the model failed on this input (request <id>)`: enough to find the log line, nothing of
//! the machine.

/// Logs `raw` under a new request id; the message for the caller.
pub fn report(raw: &str) -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    tracing::error!(request = %id, error = %raw, "the model failed on an input");
    masked(&id)
}

/// What a caller is told of incident `id`.
pub fn masked(id: &str) -> String {
    format!("the model failed on this input (request {id})")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_caller_hears_an_id_and_nothing_of_the_failure() {
        let raw = "called `Result::unwrap()` on an `Err` value: Torch(\"index 1000000000 is out of \
                   bounds\") at /usr/lib/python3/site-packages/torch/lib/libtorch_cpu.so";
        let told = super::report(raw);
        assert!(told.starts_with("the model failed on this input (request "), "{told}");
        assert!(!told.contains("Torch") && !told.contains('/'), "{told}");
        assert_ne!(super::report(raw), told, "each incident has its own id");
    }
}
