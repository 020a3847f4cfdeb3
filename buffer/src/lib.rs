//! barrage: a durable FIFO intake buffer for one-shot request floods.
