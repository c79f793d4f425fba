//! The `orders` action: `{"items", "value", "region"}` → `{"order_id", "items"}`, recording
//! orders, items and order value by region.
// Product code: no function over 100 lines (clippy.toml); tests and benches are exempt.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

use std::process::ExitCode;

fn main() -> ExitCode {
    let orders = match whisk_actions::Orders::register() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("orders: cannot register metrics: {e}");
            return ExitCode::FAILURE;
        }
    };
    whisk_metrics::run_with_context(move |params, ctx: &whisk_metrics::Context| {
        orders.handle(&params, &format!("ord-{}", ctx.activation_id))
    })
}
