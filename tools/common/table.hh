// table: prints rows as left-aligned columns separated by two spaces, the
// human output of rctctl's and rct-backup's listings.
#pragma once

#include <algorithm>
#include <iostream>
#include <string>
#include <vector>

namespace rct::tools {

inline void print_table(const std::vector<std::vector<std::string>>& rows)
{
    std::vector<std::size_t> width;
    for (const auto& row : rows) {
        width.resize(std::max(width.size(), row.size()));
        for (std::size_t i = 0; i < row.size(); ++i) {
            width[i] = std::max(width[i], row[i].size());
        }
    }
    for (const auto& row : rows) {
        std::string line;
        for (std::size_t i = 0; i < row.size(); ++i) {
            line += row[i];
            if (i + 1 < row.size()) {
                line.append(width[i] - row[i].size() + 2, ' ');
            }
        }
        std::cout << line << '\n';
    }
}

}  // namespace rct::tools
