//! Integration tests of hoard-demo: the binary, run as a user would.

mod answer_slots;
mod bots;
mod cache_cli;
mod db_outage;
mod multi_server;
mod pg_tls;
mod postgres;
mod private_pg;
mod relay;
mod server_client;
mod start_up;
mod world_cli;
