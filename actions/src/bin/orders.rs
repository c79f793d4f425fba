//! The `orders` action: `{"items", "value", "region"}` → `{"order_id", "items"}`, recording
//! orders, items and order value by region.

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
