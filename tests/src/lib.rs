//! whisk-emulator (being written).
