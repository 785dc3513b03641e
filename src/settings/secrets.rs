//! Passwords in the connection URLs (`amqp.url`, `store.url`) never leave the process: `lote
//! config` and every message that shows a URL show it masked, `user:***@host` and
//! `password=***` in the query.

/// `url` with its password (userinfo or `password=` / `sslpassword=` query values) masked.
pub fn masked_url(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest = scheme_end + 3;
        // The userinfo ends at the last `@` before the path.
        let authority_end = out[rest..].find(['/', '?', '#']).map_or(out.len(), |i| rest + i);
        if let Some(at) = out[rest..authority_end].rfind('@').map(|i| rest + i)
            && let Some(colon) = out[rest..at].find(':').map(|i| rest + i)
        {
            out.replace_range(colon + 1..at, "***");
        }
    }
    if let Some(query_start) = out.find('?') {
        let (head, query) = out.split_at(query_start + 1);
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _))
                    if ["password", "sslpassword"].contains(&key.to_ascii_lowercase().as_str()) =>
                {
                    format!("{key}=***")
                }
                _ => pair.to_string(),
            })
            .collect();
        out = format!("{head}{}", pairs.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::masked_url;

    #[test]
    fn passwords_are_masked_and_nothing_else_changes() {
        assert_eq!(
            masked_url("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(masked_url("amqps://u:p%40ss@mq:5671"), "amqps://u:***@mq:5671");
        assert_eq!(
            masked_url("postgres://lote:s3cr3t@db/lote?sslmode=require&password=x&sslpassword=y"),
            "postgres://lote:***@db/lote?sslmode=require&password=***&sslpassword=***"
        );
        assert_eq!(masked_url("postgres://lote@db/lote"), "postgres://lote@db/lote");
        assert_eq!(masked_url("sqlite://lote.db"), "sqlite://lote.db");
        assert_eq!(masked_url("postgres://db/x?user=a@b"), "postgres://db/x?user=a@b");
    }
}
