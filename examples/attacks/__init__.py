"""Attack simulations shared by the examples' scenarios and the tests that prove the controls."""
