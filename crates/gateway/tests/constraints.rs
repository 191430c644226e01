//! A table's primary key under concurrent clients over `POST /api/sql`: of many INSERTs of one
//! key sent at once, exactly one succeeds and the others get SQLSTATE 23505.

mod common;

use common::Server;
use viewcast_coord::CoordConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_http_inserts_of_one_key_admit_exactly_one() {
    let server = Server::start("CREATE TABLE k (id int PRIMARY KEY, who int)", CoordConfig::default()).await;
    let client = reqwest::Client::new();
    for round in 0..3 {
        let posts = (0..16).map(|who| {
            let (client, url) = (client.clone(), server.url("/api/sql"));
            let query = format!("INSERT INTO k VALUES ({round}, {who})");
            tokio::spawn(async move {
                let resp: serde_json::Value =
                    client.post(url).json(&serde_json::json!({ "query": query })).send().await?.json().await?;
                Ok::<_, reqwest::Error>(resp["results"][0].clone())
            })
        });
        let results: Vec<serde_json::Value> =
            futures::future::join_all(posts).await.into_iter().map(|r| r.unwrap().unwrap()).collect();
        let errors: Vec<&serde_json::Value> = results.iter().filter_map(|r| r.get("error")).collect();
        assert_eq!(results.len() - errors.len(), 1, "round {round}: {results:?}");
        for e in errors {
            assert_eq!(e["code"], "23505");
            assert_eq!(e["message"], "duplicate key value violates unique constraint \"k_pkey\"");
        }
    }
    let counts = server.select_multiset("SELECT id, count(*) FROM k GROUP BY id").await;
    assert_eq!(counts.into_iter().collect::<Vec<_>>(), [("[0,1]".into(), 1), ("[1,1]".into(), 1), ("[2,1]".into(), 1)]);
}
