"""Test support: a raw protocol client and a real server started on temporary storage."""
