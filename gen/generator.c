/* gen/generator.c -- placeholder, being written. */
typedef int sfa_placeholder_generator;
