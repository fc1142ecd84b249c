/* runtime/driver.c -- placeholder, being written. */
typedef int sfa_placeholder_driver;
