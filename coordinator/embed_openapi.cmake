# Writes OUT, a C++ file defining anneal::coordinator::OpenApiDocument() as the text of IN (the OpenAPI document).
file(READ "${IN}" ANNEAL_OPENAPI_TEXT)
file(WRITE "${OUT}.tmp" "// Generated from coordinator/openapi.json by coordinator/embed_openapi.cmake: do not edit.\n"
     "#include \"coordinator/openapi.h\"\n\nnamespace anneal::coordinator {\n\nstd::string_view OpenApiDocument() {\n"
     "  static constexpr std::string_view kDocument = R\"ANNEAL_OPENAPI(${ANNEAL_OPENAPI_TEXT})ANNEAL_OPENAPI\";\n"
     "  return kDocument;\n}\n\n}  // namespace anneal::coordinator\n")
file(RENAME "${OUT}.tmp" "${OUT}")
