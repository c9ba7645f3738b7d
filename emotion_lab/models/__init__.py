"""Networks, losses and the LightningModule that trains them."""
