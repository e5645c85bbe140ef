"""ecomsync: BigCommerce and Square to ActiveCampaign, through a Postgres warehouse."""
