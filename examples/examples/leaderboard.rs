//! A game leaderboard on counters: `incr_by` (Redis INCRBY) to add points,
//! one `mget` to read the board.
//!
//! ```text
//! cargo run -p distcache-examples --example leaderboard
//! ```
//!
//! On three nodes started in this process (or `DISTCACHE_NODES`), 16
//! tasks report 400 game results for 8 players at once. Each result is one
//! `incr_by` on the player's counter, applied by the key's first healthy
//! replica in one step, so concurrent results for one player all count.
//! The board is then read with one `mget` (one batch per node) and ranked
//! here, and checked against the sums of the results.
//!
//! Not a sorted set: the cache has no ZADD/ZRANGE. The players are the
//! application's to know (here a fixed list) and the ranking happens in the
//! client, which suits boards of up to a few thousand players.

use std::collections::HashMap;

use distcache::Client;
use distcache_examples::{Cluster, NODES_ENV};

const PLAYERS: [&str; 8] = ["ada", "bob", "cyd", "dee", "eve", "fay", "gus", "hal"];

/// One board's counters, `board:NAME:PLAYER`.
#[derive(Debug, Clone)]
struct Leaderboard {
    cache: Client,
    board: String,
}

impl Leaderboard {
    fn key(&self, player: &str) -> String {
        format!("board:{}:{player}", self.board)
    }

    /// Adds `points` to `player`'s score; the new score.
    async fn add(&self, player: &str, points: i64) -> Result<i64, distcache::Error> {
        self.cache.incr_by(self.key(player), points).await
    }

    /// Every player's score, highest first (ties by name); a player with
    /// no results has 0.
    async fn ranking(
        &self,
        players: &[&str],
    ) -> Result<Vec<(String, i64)>, Box<dyn std::error::Error + Send + Sync>> {
        let keys: Vec<String> = players.iter().map(|p| self.key(p)).collect();
        let entries = self.cache.mget(&keys).await?;
        let mut ranking = Vec::with_capacity(players.len());
        for (player, entry) in players.iter().zip(entries) {
            let score = match entry {
                None => 0,
                Some(e) => std::str::from_utf8(&e.value)?.parse()?,
            };
            ranking.push(((*player).to_owned(), score));
        }
        ranking.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Ok(ranking)
    }

    /// Deletes every player's counter (a new season, or a rerun).
    async fn reset(&self, players: &[&str]) -> Result<(), distcache::Error> {
        for p in players {
            self.cache.delete(self.key(p)).await?;
        }
        Ok(())
    }
}

/// Game `i`'s result: which player scored, and how many points (fixed, so
/// the expected board is known).
fn result(i: usize) -> (&'static str, i64) {
    (
        PLAYERS[(i * i + i / 3) % PLAYERS.len()],
        (i % 10) as i64 + 1,
    )
}

/// Reports `games` results from `tasks` tasks at once, then reads the
/// board: (the ranking, the scores the results add up to).
async fn play(
    board: &Leaderboard,
    games: usize,
    tasks: usize,
) -> Result<(Vec<(String, i64)>, HashMap<String, i64>), Box<dyn std::error::Error + Send + Sync>> {
    board.reset(&PLAYERS).await?;
    let mut reporters = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let board = board.clone();
        reporters.spawn(async move {
            for i in (t..games).step_by(tasks) {
                let (player, points) = result(i);
                board.add(player, points).await?;
            }
            Ok::<(), distcache::Error>(())
        });
    }
    while let Some(done) = reporters.join_next().await {
        done??;
    }
    let mut expected = HashMap::new();
    for i in 0..games {
        let (player, points) = result(i);
        *expected.entry(player.to_owned()).or_insert(0) += points;
    }
    Ok((board.ranking(&PLAYERS).await?, expected))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    distcache_examples::init_tracing();
    let cluster = Cluster::from_list_or_start(std::env::var(NODES_ENV).ok()).await?;
    println!("nodes: {}", cluster.urls().join(", "));
    let board = Leaderboard {
        cache: cluster.client().await?,
        board: "season-1".to_owned(),
    };
    let t = std::time::Instant::now();
    let (ranking, expected) = play(&board, 400, 16).await?;
    println!(
        "400 results from 16 tasks, board read with one mget: {:.0?}",
        t.elapsed()
    );
    for (rank, (player, score)) in ranking.iter().take(3).enumerate() {
        println!("  #{} {player}: {score}", rank + 1);
    }
    let all_counted = ranking.iter().all(|(p, s)| expected.get(p) == Some(s));
    println!("every result counted: {all_counted}");
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_results_all_count_and_the_board_is_ranked() {
        let cluster = Cluster::start(3).await.unwrap();
        let board = Leaderboard {
            cache: cluster.client().await.unwrap(),
            board: "test".to_owned(),
        };
        let (ranking, expected) = play(&board, 400, 16).await.unwrap();
        assert_eq!(ranking.len(), PLAYERS.len());
        for (player, score) in &ranking {
            assert_eq!(expected.get(player), Some(score), "{ranking:?}");
        }
        assert!(ranking.windows(2).all(|w| w[0].1 >= w[1].1), "{ranking:?}");
        // A second season starts from zero.
        let (again, _) = play(&board, 8, 2).await.unwrap();
        assert_eq!(
            again.iter().map(|(_, s)| s).sum::<i64>(),
            (0..8).map(|i| result(i).1).sum::<i64>()
        );
    }
}
