"""CRM intake: each CRM's webhook verified and stored as it arrived (services.crm_inbox),
then processed from storage into the closed deals the rest of Closeloop works on."""
