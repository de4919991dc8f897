//! `netvlan-cni`: the CNI plugin. Everything is in the library's CNI front
//! ([`netvlan::cni`]); this reads the environment and stdin, prints the
//! result or the spec's error JSON on stdout, and exits 0 or 1.

use std::io::Read;

fn main() {
    let env = netvlan::cni::Env::from_process();
    let mut stdin = String::new();
    // VERSION needs no stdin; the others fail on an empty config below.
    let read = if env.command == "VERSION" {
        Ok(0)
    } else {
        std::io::stdin().read_to_string(&mut stdin)
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread tokio runtime can always be built");
    let result = match read {
        Ok(_) => runtime.block_on(netvlan::cni::run(&env, &stdin)),
        Err(e) => Err(netvlan::cni::CniError::Stdin(e)),
    };
    match result {
        Ok(Some(answer)) => println!("{answer:#}"),
        Ok(None) => {}
        Err(e) => {
            let version = netvlan::cni::error_version(&stdin);
            println!("{:#}", e.report().to_cni(&version));
            std::process::exit(1);
        }
    }
}
