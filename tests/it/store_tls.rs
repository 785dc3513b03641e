//! TLS to PostgreSQL: a `store.url` with `sslmode=require` encrypts every connection of the
//! job store (the server here has `ssl = on` with Debian's self-signed snakeoil certificate,
//! as scripts/services installs it), and `sslmode=verify-full`, which needs a certificate the
//! machine trusts, refuses that one with the store's error.

use crate::common;

use common::broker::fresh_postgres;
use lote::jobs::store::JobStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_speaks_tls_to_postgres_when_its_url_asks() {
    let url = fresh_postgres().await;
    let tls = format!("{url}?sslmode=require");
    let store = JobStore::connect(&tls).await.expect("the store connects over TLS");
    assert!(store.job("job_none").await.unwrap().is_none(), "and answers");
    let observer = sqlx::PgPool::connect(&url).await.unwrap();
    let (connections, encrypted): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a \
         JOIN pg_stat_ssl s USING (pid) WHERE a.datname = current_database() \
         AND a.pid <> pg_backend_pid()",
    )
    .fetch_one(&observer)
    .await
    .unwrap();
    assert!(connections > 0, "the store holds connections");
    assert_eq!(encrypted, connections, "every store connection is encrypted");
    store.close().await;

    let refused = JobStore::connect(&format!("{url}?sslmode=verify-full")).await;
    let error = refused.err().expect("an untrusted certificate is refused").to_string();
    assert!(error.starts_with("job store: "), "{error}");
}
