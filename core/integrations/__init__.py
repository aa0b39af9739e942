"""CRM and Billing over httpx: typed errors, response classification, the mock upstream."""
