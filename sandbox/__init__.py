"""Local stand-ins for BigCommerce, Square and ActiveCampaign (see sandbox/README.md)."""
