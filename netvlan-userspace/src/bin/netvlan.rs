//! The `netvlan` command: everything is in the library's CLI front
//! ([`netvlan::cli`]), so other fronts share the same control plane.

fn main() {
    netvlan::cli::main();
}
